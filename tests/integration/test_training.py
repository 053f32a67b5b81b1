"""ESPnet training of the espnet_ot model (TOT, dumped PLM features) beyond one uninterrupted process.

Data-parallel: two CPU ranks launched by torchrun (ESPnet's external-launcher mode, gloo) run
`espnet2.bin.asr_train`; both build our classes, split the data, end with identical parameters, log finite OT
stats, and the checkpoint decodes in Speech2Text. Resume: 1 epoch, then `--resume true` up to epoch 2, equals
an uninterrupted 2-epoch run.
"""

import json
import math
import re
import textwrap

import pytest

from helpers import (
    TINY_ENCODER_YAML,
    char_token_list,
    make_tiny_bert,
    start_python,
    toy_transcripts,
    wait,
    write_data_dir,
    write_token_list,
)

pytest.importorskip("espnet2", reason="needs ESPnet (pip install -e . installs it)")

CONFIG = (
    """\
frontend: default
frontend_conf: {n_fft: 256, hop_length: 128, n_mels: 20}
normalize: utterance_mvn
"""
    + TINY_ENCODER_YAML
    + """postencoder: cakt_adapter
postencoder_conf: {plm_dim: 32, scale: 1.0}
model: espnet_ot
model_conf:
    alignment: tot
    alignment_conf: {eps: 0.5, beta: 0.5}
    ctc_lambda: 0.3
    ot_weight: 1.0
    plm: PLM_DIR
    token_type: char
optim: adam
optim_conf: {lr: 0.002}
batch_type: folded
batch_size: 4
fold_length: [80000, 150]
num_workers: 0
seed: 0
use_tensorboard: false
keep_nbest_models: 1
best_model_criterion: [[valid, loss, min]]
"""
)

# Run by each torchrun rank: ESPnet's own entry point, then what this rank holds afterwards.
RANK_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    import torch
    import espnet2.tasks.asr as asr  # our classes come from espnet_ot's import hook, not from an import here
    from espnet2.tasks.asr import ASRTask

    built, seen = [], {"train": 0}
    _build = ASRTask.build_model.__func__

    def count(module, args, kwargs):  # utterances this rank trains on (the inner model, also under DDP)
        if module.training:
            seen["train"] += int(kwargs["speech"].shape[0])

    def build_model(cls, args):
        model = _build(cls, args)
        model.register_forward_pre_hook(count, with_kwargs=True)
        built.append(model)
        return model

    ASRTask.build_model = classmethod(build_model)
    out, argv = sys.argv[1], sys.argv[2:]
    ASRTask.main(cmd=argv)  # what `python -m espnet2.bin.asr_train ARGS` runs

    rank = int(os.environ["RANK"])
    model = built[0]
    torch.save({k: v.detach().clone() for k, v in model.state_dict().items()}, f"{out}/rank{rank}.pth")
    with open(f"{out}/rank{rank}.json", "w") as f:
        json.dump(dict(
            rank=rank, world_size=torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1,
            registered=["espnet_ot" in asr.model_choices.classes, "cakt_adapter" in asr.postencoder_choices.classes],
            model=type(model).__name__, postencoder=type(model.postencoder).__name__, train_utts=seen["train"],
        ), f)
    """
)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """Tiny toy set (8 train / 2 valid utterances), tiny BERT, its dumped features, shape files, config."""
    import soundfile

    from espnet_ot.bin import dump_plm_feats

    root = tmp_path_factory.mktemp("espnet_dist")
    plm = make_tiny_bert(root / "plm")
    texts = toy_transcripts(10, seed=3)
    sets = {
        "train": write_data_dir(root / "data/train", {f"spk{i % 2}_u{i}": t for i, t in enumerate(texts[:8])}),
        "valid": write_data_dir(root / "data/valid", {f"spk9_v{i}": t for i, t in enumerate(texts[8:])}, seed=1),
    }
    tokens = write_token_list(root / "tokens.txt", char_token_list())
    n_tokens = len(char_token_list())
    args = [
        "--token_list",
        str(tokens),
        "--token_type",
        "char",
        "--use_preprocessor",
        "true",
        "--non_linguistic_symbols",
        "none",
        "--cleaner",
        "none",
        "--g2p",
        "none",
        "--config",
        str(root / "conf.yaml"),
        "--allow_variable_data_keys",
        "true",
        "--num_att_plot",
        "0",
    ]
    for name, d in sets.items():
        # shape files as asr.sh stage 10 writes them: samples per utterance, tokens per transcript
        speech, text = [], []
        for line in (d / "wav.scp").read_text().splitlines():
            utt, path = line.split()
            speech.append(f"{utt} {soundfile.info(path).frames}\n")
        for line in (d / "text").read_text(encoding="utf-8").splitlines():
            utt, t = line.split(maxsplit=1)
            text.append(f"{utt} {len(t)},{n_tokens}\n")
        (d / "speech_shape").write_text("".join(speech))
        (d / "text_shape.char").write_text("".join(text))
        dump_plm_feats.main(
            [
                "--text",
                f"{d}/text",
                "--plm",
                str(plm),
                "--token_list",
                str(tokens),
                "--token_type",
                "char",
                "--output_dir",
                str(root / "plm_feats" / name),
            ]
        )
        for data in (
            f"{d}/wav.scp,speech,sound",
            f"{d}/text,text,text",
            f"{root}/plm_feats/{name}/feats.scp,plm_feats,kaldi_ark",
        ):
            args += [f"--{name}_data_path_and_name_and_type", data]
        args += [f"--{name}_shape_file", f"{d}/speech_shape", f"--{name}_shape_file", f"{d}/text_shape.char"]
    (root / "conf.yaml").write_text(CONFIG.replace("PLM_DIR", str(plm)), encoding="utf-8")
    return dict(root=root, args=args, valid=sets["valid"])


def _check(proc, what):
    assert proc.returncode == 0, f"{what} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"


def _stats(log: str, key: str):
    """Values of `key=` in ESPnet's epoch summaries ("1epoch results: [train] ..., loss_ot=0.123, ...")."""
    return [float(v) for v in re.findall(rf"\b{key}=([-+0-9.eEinfa]+)", log)]


def test_data_parallel_two_cpu_ranks(toy):
    import torch

    root = toy["root"]
    exp, out = root / "exp_ddp", root / "ranks"
    out.mkdir()
    script = root / "rank.py"
    script.write_text(RANK_SCRIPT)
    proc = wait(
        start_python(
            [
                "-m",
                "torch.distributed.run",
                "--standalone",
                "--nnodes",
                "1",
                "--nproc_per_node",
                "2",
                str(script),
                str(out),
                *toy["args"],
                "--max_epoch",
                "1",
                "--output_dir",
                str(exp),
                "--ngpu",
                "0",
                "--dist_backend",
                "gloo",
                "--multiprocessing_distributed",
                "false",
            ],
            cwd=root,
        ),
        timeout=1500,
    )
    _check(proc, "torchrun asr_train")
    log = proc.stdout + proc.stderr

    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    for r, info in enumerate(ranks):
        assert info == dict(
            rank=r,
            world_size=2,
            registered=[True, True],
            model="ESPnetOTModel",
            postencoder="CAKTAdapter",
            train_utts=info["train_utts"],
        ), info
    # each rank trained on its half of every batch: together exactly the 8 training utterances
    assert [info["train_utts"] for info in ranks] == [4, 4]

    # DDP kept the replicas identical, and rank 0 saved exactly that model
    states = [torch.load(out / f"rank{r}.pth") for r in (0, 1)]
    saved = torch.load(exp / "1epoch.pth", map_location="cpu")
    assert states[0].keys() == states[1].keys() == saved.keys()
    for k in saved:
        assert torch.equal(states[0][k], states[1][k]), k
        assert torch.equal(states[0][k], saved[k]), k

    for key in ("loss_ot", "loss_align", "loss_ctc", "band_mass"):
        values = _stats(log, key)
        assert len(values) >= 2, (key, log[-3000:])  # train and valid summaries of epoch 1
        assert all(math.isfinite(v) for v in values), (key, values)

    import soundfile
    from espnet2.bin.asr_inference import Speech2Text

    s2t = Speech2Text(
        asr_train_config=str(exp / "config.yaml"),
        asr_model_file=str(exp / "1epoch.pth"),
        device="cpu",
        ctc_weight=1.0,
        beam_size=1,
        lm_weight=0.0,
    )
    assert type(s2t.asr_model).__name__ == "ESPnetOTModel"
    wav, _ = soundfile.read(str(toy["valid"] / "wav" / "spk9_v0.wav"))
    text = s2t(wav)[0][0]
    assert isinstance(text, str)


def test_resume_equals_uninterrupted_run(toy):
    import torch

    root = toy["root"]
    full, resumed = root / "exp_full", root / "exp_resumed"
    train = ["-m", "espnet2.bin.asr_train", *toy["args"], "--ngpu", "0"]
    # the uninterrupted 2-epoch run and the first epoch of the interrupted one, side by side
    a = start_python([*train, "--max_epoch", "2", "--output_dir", str(full)], cwd=root)
    b = start_python([*train, "--max_epoch", "1", "--output_dir", str(resumed)], cwd=root)
    a, b = wait(a, timeout=1500), wait(b, timeout=1500)
    _check(a, "2-epoch run")
    _check(b, "1-epoch run")
    assert not (resumed / "2epoch.pth").exists()
    after_one = torch.load(resumed / "1epoch.pth", map_location="cpu")
    c = start_python([*train, "--max_epoch", "2", "--resume", "true", "--output_dir", str(resumed)], cwd=root)
    c = wait(c, timeout=1500)
    _check(c, "resumed run")
    assert f"The training was resumed using {resumed}/checkpoint.pth" in c.stderr
    assert "1epoch results" not in c.stderr and "2epoch results" in c.stderr  # epoch 1 was not trained again

    ref = torch.load(full / "2epoch.pth", map_location="cpu")
    got = torch.load(resumed / "2epoch.pth", map_location="cpu")
    assert ref.keys() == got.keys()
    worst = max(float((ref[k].double() - got[k].double()).abs().max()) for k in ref if ref[k].numel())
    assert worst <= 1e-6, worst
    moved = max(float((after_one[k].double() - got[k].double()).abs().max()) for k in got if got[k].numel())
    assert moved > 1e-4, "epoch 2 did not change the model"
    for key in ("loss_ot", "loss_align"):
        assert all(math.isfinite(v) for v in _stats(c.stderr, key)) and _stats(c.stderr, key)
    # a resume with another alignment setting is refused before ESPnet rewrites config.yaml
    config_before = (resumed / "config.yaml").read_text(encoding="utf-8")
    d = wait(
        start_python(
            [
                *train,
                "--max_epoch",
                "3",
                "--resume",
                "true",
                "--output_dir",
                str(resumed),
                "--model_conf",
                "alignment=gmot",
            ],
            cwd=root,
        ),
        timeout=1500,
    )
    assert d.returncode != 0
    assert "model_conf.alignment " in d.stderr and "train into a new --output_dir" in d.stderr, d.stderr[-2000:]
    assert (resumed / "config.yaml").read_text(encoding="utf-8") == config_before
    assert not (resumed / "3epoch.pth").exists()
