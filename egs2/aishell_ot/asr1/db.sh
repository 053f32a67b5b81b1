# Corpus locations: AISHELL-1 is downloaded here by local/data.sh when absent (override: AISHELL=/path ./run.sh).
# The directory holds (or will hold) data_aishell/{wav,transcript}; the toy corpus uses the same layout.
AISHELL=${AISHELL:-downloads}
