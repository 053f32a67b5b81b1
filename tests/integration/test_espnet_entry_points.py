"""End to end through ESPnet's own entry points in fresh interpreters that never import espnet_ot explicitly.

collect_stats -> 1-epoch asr_train on dumped plm_feats (train and valid) with model_conf.plm pointing at a
directory that does not exist (so the dumped features are what training used) -> asr_inference and Speech2Text
from user code with the PLM directory deleted.
"""

import json
import shutil

import espnet2  # noqa: F401  (a required dependency: a broken install fails here)
import pytest

from helpers import (
    TINY_ENCODER_YAML,
    char_token_list,
    make_tiny_bert,
    run_python,
    start_python,
    toy_transcripts,
    wait,
    write_data_dir,
    write_token_list,
)
from training_log import check_training_stats

CONFIG = (
    """\
frontend: default
frontend_conf:
    n_fft: 256
    hop_length: 128
    n_mels: 20
"""
    + TINY_ENCODER_YAML
    + """postencoder: cakt_adapter
postencoder_conf:
    plm_dim: 32
    scale: 1.0
model: espnet_ot
model_conf:
    alignment: tot
    alignment_conf:
        eps: 0.5
        beta: 0.5
    ctc_lambda: 0.3
    ot_weight: 1.0
    plm: PLM_DIR
    token_type: char
optim: adam
optim_conf:
    lr: 0.001
"""
)


def _check(proc, what):
    assert proc.returncode == 0, f"{what} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 1-epoch espnet_ot experiment trained through `python -m espnet2.bin.asr_train`."""
    root = tmp_path_factory.mktemp("espnet_e2e")
    plm = make_tiny_bert(root / "plm")
    texts = toy_transcripts(8, seed=1)
    train = write_data_dir(root / "data/train", {f"spk{i % 2}_u{i}": t for i, t in enumerate(texts[:6])})
    valid = write_data_dir(root / "data/valid", {f"spk9_v{i}": t for i, t in enumerate(texts[6:])}, seed=1)
    tokens = write_token_list(root / "tokens.txt", char_token_list())
    no_plm = root / "plm_is_not_here"  # training must read the dumped Z_L and never look for the PLM
    (root / "conf.yaml").write_text(CONFIG.replace("PLM_DIR", str(no_plm)), encoding="utf-8")
    common = [
        "--use_preprocessor",
        "true",
        "--token_type",
        "char",
        "--token_list",
        str(tokens),
        "--non_linguistic_symbols",
        "none",
        "--cleaner",
        "none",
        "--g2p",
        "none",
        "--config",
        str(root / "conf.yaml"),
        "--ngpu",
        "0",
        "--num_workers",
        "0",
        "--valid_data_path_and_name_and_type",
        f"{valid}/wav.scp,speech,sound",
        "--valid_data_path_and_name_and_type",
        f"{valid}/text,text,text",
        "--train_data_path_and_name_and_type",
        f"{train}/wav.scp,speech,sound",
        "--train_data_path_and_name_and_type",
        f"{train}/text,text,text",
    ]
    stats = run_python(
        [
            "-m",
            "espnet2.bin.asr_train",
            "--collect_stats",
            "true",
            *common,
            "--train_shape_file",
            f"{train}/wav.scp",
            "--valid_shape_file",
            f"{valid}/wav.scp",
            "--batch_size",
            "2",
            "--output_dir",
            str(root / "stats"),
        ],
        cwd=root,
    )
    _check(stats, "collect_stats")
    n_tokens = len(char_token_list())
    for split in ("train", "valid"):
        lines = (root / "stats" / split / "text_shape").read_text().splitlines()
        (root / "stats" / split / "text_shape.char").write_text("".join(f"{line},{n_tokens}\n" for line in lines))

    from espnet_ot.bin import dump_plm_feats  # in-process: saves an interpreter start

    for split, data in (("train", train), ("valid", valid)):
        dump_plm_feats.main(
            [
                "--text",
                f"{data}/text",
                "--plm",
                str(plm),
                "--token_list",
                str(tokens),
                "--token_type",
                "char",
                "--output_dir",
                str(root / "plm_feats" / split),
            ]
        )

    exp = root / "exp"
    train_run = run_python(
        [
            "-m",
            "espnet2.bin.asr_train",
            *common,
            "--train_data_path_and_name_and_type",
            f"{root}/plm_feats/train/feats.scp,plm_feats,kaldi_ark",
            "--valid_data_path_and_name_and_type",
            f"{root}/plm_feats/valid/feats.scp,plm_feats,kaldi_ark",
            "--train_shape_file",
            f"{root}/stats/train/speech_shape",
            "--train_shape_file",
            f"{root}/stats/train/text_shape.char",
            "--valid_shape_file",
            f"{root}/stats/valid/speech_shape",
            "--valid_shape_file",
            f"{root}/stats/valid/text_shape.char",
            "--normalize",
            "global_mvn",
            "--normalize_conf",
            f"stats_file={root}/stats/train/feats_stats.npz",
            "--batch_type",
            "folded",
            "--batch_size",
            "3",
            "--fold_length",
            "80000",
            "--fold_length",
            "150",
            "--max_epoch",
            "1",
            "--seed",
            "0",
            "--use_tensorboard",
            "false",
            "--output_dir",
            str(exp),
        ],
        cwd=root,
    )
    _check(train_run, "asr_train")
    return dict(root=root, exp=exp, plm=plm, no_plm=no_plm, valid=valid, log=train_run.stderr)


def test_training_reports_ot_stats_and_images(trained):
    log = trained["log"]
    # every statistic finite in every epoch (train and valid), band_mass in [0, 1], the OT statistics present
    results = check_training_stats(log, ot=True)
    assert sorted(results) == [1] and "cer_ctc" in results[1]["valid"]
    for key in ("loss_ot", "loss_align", "band_mass", "coupling_entropy", "loss_ctc", "cer_ctc"):
        assert (trained["exp"] / "images" / f"{key}.png").exists(), key
    # model_conf.plm does not exist and the PLM was never loaded: training and validation used the dumped Z_L
    assert not trained["no_plm"].exists() and "Loaded frozen PLM" not in log


def test_checkpoint_contains_no_plm_weights(trained):
    import torch

    state = torch.load(trained["exp"] / "1epoch.pth", map_location="cpu")
    assert "postencoder.fc2.weight" in state and "ctc.ctc_lo.weight" in state
    plm_keys = [k for k in state if "word_embeddings" in k or "attention.self" in k or "plm" in k]
    assert plm_keys == []
    prefixes = {k.split(".")[0] for k in state}
    assert prefixes <= {"frontend", "normalize", "encoder", "postencoder", "ctc"}, prefixes


def test_plot_coupling_takes_settings_from_the_trained_model(trained):
    """plot_coupling asks the loaded model (AlignmentConfig, PLM, specials) instead of re-reading the YAML."""
    from espnet_ot.asr.plot_coupling import LoadedModel
    from espnet_ot.bin import plot_coupling
    from espnet_ot.ot import AlignmentConfig

    lm = LoadedModel(trained["exp"] / "config.yaml", trained["exp"] / "1epoch.pth", "cpu", None, None)
    assert lm.alignment == "tot" and lm.alignment_config == AlignmentConfig(method="tot", eps=0.5, beta=0.5)
    assert lm.plm_name == str(trained["no_plm"]) and lm.plm_layer == -1 and lm.include_special
    assert lm.frame_shift_s == 0.032  # measured on the model: hop 128 at 16 kHz, conv2d subsampling 4
    out = trained["root"] / "plots"
    plot_coupling.main(
        [
            "--asr_train_config",
            str(trained["exp"] / "config.yaml"),
            "--asr_model_file",
            str(trained["exp"] / "1epoch.pth"),
            "--data_dir",
            str(trained["valid"]),
            "--num_utts",
            "1",
            "--methods",
            "ot",
            "gmot",
            "--plm",
            str(trained["plm"]),
            "--output_dir",
            str(out),
        ]
    )  # the configured PLM path is absent on purpose
    assert (out / "spk9_v0.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


USER_SCRIPT = """
import json, multiprocessing as mp, sys

def child(q):
    import espnet2.tasks.asr as asr
    q.put(["espnet_ot" in asr.model_choices.classes,
           "cakt_adapter" in asr.postencoder_choices.classes])

if __name__ == "__main__":
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=child, args=(q,))
    p.start()  # imports in parallel with the parent
    import soundfile
    from espnet2.bin.asr_inference import Speech2Text
    s2t = Speech2Text(asr_train_config=sys.argv[1], asr_model_file=sys.argv[2],
                      ctc_weight=1.0, beam_size=1, device="cpu")
    wav, fs = soundfile.read(sys.argv[3])
    hyp = s2t(wav)[0][0]
    seen = q.get(timeout=600)
    p.join()
    sys.stderr.write("RESULT " + json.dumps(dict(
        model=type(s2t.asr_model).__name__, plm_loaded=s2t.asr_model.plm_branch.loaded,
        hyp_type=type(hyp).__name__, child=seen, exitcode=p.exitcode)) + "\\n")
"""


def test_inference_without_the_plm(trained):
    """asr_inference CLI and Speech2Text from user code (run concurrently), PLM directory deleted."""
    shutil.rmtree(trained["plm"])  # the configured model_conf.plm no longer exists
    root, exp, valid = trained["root"], trained["exp"], trained["valid"]
    assert str(trained["no_plm"]) in (exp / "config.yaml").read_text()
    script = root / "user.py"
    script.write_text(USER_SCRIPT)
    cli = start_python(
        [
            "-m",
            "espnet2.bin.asr_inference",
            "--asr_train_config",
            str(exp / "config.yaml"),
            "--asr_model_file",
            str(exp / "1epoch.pth"),
            "--ngpu",
            "0",
            "--batch_size",
            "1",
            "--ctc_weight",
            "1.0",
            "--beam_size",
            "1",
            "--nbest",
            "1",
            "--data_path_and_name_and_type",
            f"{valid}/wav.scp,speech,sound",
            "--key_file",
            f"{valid}/wav.scp",
            "--output_dir",
            str(root / "decode"),
        ],
        cwd=root,
    )
    user = start_python(
        [str(script), str(exp / "config.yaml"), str(exp / "1epoch.pth"), str(valid / "wav" / "spk9_v0.wav")],
        cwd=root,
    )
    cli, user = wait(cli), wait(user)
    _check(cli, "asr_inference")
    hyp = (root / "decode" / "1best_recog" / "text").read_text().splitlines()
    assert sorted(line.split()[0] for line in hyp) == ["spk9_v0", "spk9_v1"]

    _check(user, "user script")
    line = [x for x in user.stderr.splitlines() if x.startswith("RESULT ")][-1]
    result = json.loads(line[len("RESULT ") :])
    assert result == dict(model="ESPnetOTModel", plm_loaded=False, hyp_type="str", child=[True, True], exitcode=0)
