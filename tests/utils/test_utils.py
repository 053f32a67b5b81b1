"""espnet_ot.utils: progress reporting of long loops, the CJK font of the pictures, config files, and what the
benchmarks count (op_counts) on what (random_ot_problem)."""

import io
import re
import warnings
from pathlib import Path

import pytest
import torch
import yaml

from espnet_ot.utils import fonts
from espnet_ot.utils.config_files import plm_width, write_variant
from espnet_ot.utils.measure import op_counts, random_ot_problem
from espnet_ot.utils.progress import Progress, progress
from helpers import IN_CI

# ------------------------------------------------------------------------------------------- progress


def test_progress_log_lines_show_rate_and_time_left(monkeypatch):
    monkeypatch.delenv("ESPNET_OT_PROGRESS", raising=False)
    out = io.StringIO()  # not a terminal: log lines
    items = list(progress(range(10), total=40, desc="dump", unit="utt", weight=lambda _: 4, interval=0.0, file=out))
    assert items == list(range(10))
    lines = out.getvalue().splitlines()
    assert len(lines) == 11  # one per update (interval 0) and the final line
    first = re.fullmatch(
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d dump: 4/40 utt \(10\.0%\), [0-9.e+]+ utt/s, elapsed 0:00:00, left \S+",
        lines[0],
    )
    assert first, lines[0]
    assert "dump: 40/40 utt (100.0%)" in lines[-1] and lines[-1].endswith("left 0:00:00")


def test_progress_interval_limits_the_lines(monkeypatch):
    monkeypatch.delenv("ESPNET_OT_PROGRESS", raising=False)
    out = io.StringIO()
    with Progress(1000, "train", unit="step", interval=3600, file=out) as bar:
        for _ in range(1000):
            bar.update()
    assert out.getvalue().count("\n") == 1 and "train: 1000/1000 step" in out.getvalue()


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_on_a_terminal_is_a_tqdm_bar(monkeypatch):
    monkeypatch.delenv("ESPNET_OT_PROGRESS", raising=False)
    out = _Terminal()
    for _ in progress(range(5), total=5, desc="synthesis", unit="utt", file=out):
        pass
    text = out.getvalue()
    assert "\r" in text and "synthesis: 100%" in text and "5/5" in text and "utt/s" in text


def test_progress_environment_override_and_bad_mode(monkeypatch):
    out = _Terminal()
    monkeypatch.setenv("ESPNET_OT_PROGRESS", "off")
    list(progress(range(3), total=3, desc="x", file=out))
    assert out.getvalue() == ""
    monkeypatch.setenv("ESPNET_OT_PROGRESS", "log")
    list(progress(range(3), total=3, desc="x", file=out, interval=3600))
    assert out.getvalue().count("\n") == 1 and "\r" not in out.getvalue()
    monkeypatch.setenv("ESPNET_OT_PROGRESS", "loud")
    with pytest.raises(ValueError, match="ESPNET_OT_PROGRESS"):
        Progress(3, "x", file=out)
    with pytest.raises(ValueError, match="mode"):
        Progress(3, "x", mode="fast")


def test_dump_plm_feats_reports_progress(tiny_plm_dir, tmp_path, capfd, monkeypatch):
    monkeypatch.delenv("ESPNET_OT_PROGRESS", raising=False)
    from espnet_ot.bin import dump_plm_feats

    text = tmp_path / "text"
    text.write_text("".join(f"u{i} 我们好\n" for i in range(5)), encoding="utf-8")
    dump_plm_feats.main(
        ["--text", str(text), "--plm", str(tiny_plm_dir), "--output_dir", str(tmp_path / "o"), "--batch_size", "2"]
    )
    err = capfd.readouterr().err  # pytest's capture is not a terminal: log lines
    assert re.search(r"dump_plm_feats contextual: 5/5 utt \(100\.0%\), \S+ utt/s, elapsed \S+, left 0:00:00", err), err


# ------------------------------------------------------------------------------------------- CJK font


def _system_cjk_font_files():
    from matplotlib import font_manager

    return [
        p
        for p in font_manager.findSystemFonts()
        if any(h in Path(p).name.lower().replace("-", "") for h in fonts.CJK_FILE_HINTS)
    ]


def test_cjk_font_is_found_and_draws_chinese(tmp_path):
    """With a CJK font installed (CI: .ci/system_deps.sh installs fonts-noto-cjk) the pictures show the characters."""
    if not _system_cjk_font_files():
        pytest.skip("no CJK font installed: `apt-get install fonts-noto-cjk` (CI installs it through `make sysdeps`)")
    fonts.find_cjk_font.cache_clear()
    family = fonts.find_cjk_font()
    assert family is not None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with matplotlib.rc_context():
        assert fonts.use_cjk_font.__wrapped__("test") == family
        fig, ax = plt.subplots()
        ax.set_yticks([0, 1])
        ax.set_yticklabels(["[CLS]", "我们今天很好"])
        ax.set_title("今天天气很好")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fig.savefig(tmp_path / "cjk.png")
        plt.close(fig)
    missing = [str(w.message) for w in caught if "missing from" in str(w.message)]
    assert missing == [], missing[:3]


def test_no_cjk_font_falls_back_with_one_notice(monkeypatch, capsys):
    monkeypatch.setattr(fonts, "find_cjk_font", lambda: None)
    assert fonts.use_cjk_font.__wrapped__("plot_coupling") is None
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("plot_coupling: no CJK font found")
    assert "fonts-noto-cjk" in err[0] and fonts.FONT_ENV in err[0]

    from espnet_ot.asr.plot_coupling import display_tokens

    assert display_tokens(["[CLS]", "我"], have_cjk_font=False) == ["[CLS]", "U+6211"]


def test_font_override_must_be_a_cjk_font(monkeypatch, tmp_path):
    fonts.find_cjk_font.cache_clear()
    monkeypatch.setenv(fonts.FONT_ENV, str(tmp_path / "none.ttf"))
    try:
        with pytest.raises(ValueError, match=fonts.FONT_ENV):
            fonts.find_cjk_font()
    finally:
        fonts.find_cjk_font.cache_clear()
    import matplotlib

    dejavu = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    assert not fonts.covers_cjk(str(dejavu))
    if IN_CI or _system_cjk_font_files():
        assert any(fonts.covers_cjk(p) for p in _system_cjk_font_files())


# ------------------------------------------------------------------------------------------- config files
def test_variant_config_merges_the_patch_deeply(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text(
        yaml.safe_dump({"model_conf": {"ot_weight": 1.0, "alignment_conf": {"eps": 0.1, "beta": 0.5}}, "max_epoch": 5})
    )
    dst = write_variant(base, {"model_conf": {"alignment_conf": {"eps": 0.3}}}, tmp_path / "v.yaml", "v")
    conf = yaml.safe_load(dst.read_text())
    assert conf == {"model_conf": {"ot_weight": 1.0, "alignment_conf": {"eps": 0.3, "beta": 0.5}}, "max_epoch": 5}
    assert yaml.safe_load(base.read_text())["model_conf"]["alignment_conf"]["eps"] == 0.1
    assert dst.read_text().splitlines()[0] == '# v: base.yaml + {"model_conf": {"alignment_conf": {"eps": 0.3}}}'


def test_plm_width_reads_the_hidden_size_of_a_saved_plm(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "bert", "hidden_size": 48}', encoding="utf-8")
    assert plm_width(tmp_path) == 48


# ------------------------------------------------------------------------------------------- measure
def test_op_counts_sees_every_kind_of_host_read():
    x = torch.arange(6.0)

    def reads():  # one read of each kind a GPU waits for; the arithmetic is not one
        y = x * 2
        y.tolist()
        bool(y.any())
        float(y.sum())
        y.nonzero()
        y[y > 3]  # boolean-mask indexing: a nonzero inside

    assert op_counts(reads)["syncs"] == 5
    assert op_counts(lambda: x * 2)["syncs"] == 0


def test_random_ot_problem_is_seeded_and_its_first_utterance_has_the_full_length():
    x, y, mx, my, la, lt = random_ot_problem(4, 30, 6, 8, "cpu", 0)
    assert x.shape == (4, 30, 8) and y.shape == (4, 6, 8) and la[0] == 30 and lt[0] == 6
    assert mx.sum(-1).tolist() == la and my.sum(-1).tolist() == lt and all(15 <= n <= 30 for n in la)
    again = random_ot_problem(4, 30, 6, 8, "cpu", 0)
    assert torch.equal(x, again[0]) and torch.equal(y, again[1]) and (la, lt) == again[4:]
