# Job launchers used by asr.sh: run.pl (this machine) by default; cmd_backend=slurm (conf/slurm.conf) for a cluster.
#
# Each launcher takes `<cmd>.pl [--gpu N] [--mem 4G] [JOB=1:N] <log> <command...>`; asr.sh prefixes training
# with ${cuda_cmd}, data preparation/statistics with ${train_cmd} and decoding with ${decode_cmd}.
# Override the backend without editing this file: `cmd_backend=slurm ./run.sh ...`.

cmd_backend=${cmd_backend:-local}

case "${cmd_backend}" in
    local)   # this machine, no scheduler
        export train_cmd="run.pl"; export cuda_cmd="run.pl"; export decode_cmd="run.pl" ;;
    stdout)  # this machine, log also to stdout
        export train_cmd="stdout.pl"; export cuda_cmd="stdout.pl"; export decode_cmd="stdout.pl" ;;
    slurm)   # sbatch; partitions and GPU flags are in conf/slurm.conf (edit `-p cpu` / `-p gpu` for your site)
        export train_cmd="slurm.pl --config conf/slurm.conf"
        export cuda_cmd="slurm.pl --config conf/slurm.conf"
        export decode_cmd="slurm.pl --config conf/slurm.conf" ;;
    sge)     # qsub (Sun Grid Engine); queue.pl defaults, or add your conf/queue.conf
        export train_cmd="queue.pl"; export cuda_cmd="queue.pl"; export decode_cmd="queue.pl" ;;
    *)
        echo "$0: Error: unknown cmd_backend=${cmd_backend} (use local, stdout, slurm or sge)" 1>&2
        return 1 ;;
esac
