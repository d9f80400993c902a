"""The prep and synth commands: every registered corpus is listed, unknown names are one line."""

from test_cli import sertk

from sertk.corpora import CORPORA


def test_prep_help_lists_every_corpus():
    out = sertk("prep", "--help")
    assert out.returncode == 0
    for name in CORPORA:
        assert name in out.stdout
    assert "--include-song" in out.stdout and "--style" in out.stdout
    synth = sertk("synth", "--help")
    for name in CORPORA:
        assert name in synth.stdout


def test_unknown_corpus_is_one_line(tmp_path):
    out = sertk("prep", "emo-db", str(tmp_path), str(tmp_path / "d"))
    assert out.returncode == 1
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert lines == ["error: unknown corpus 'emo-db' (known: iemocap, emodb, ravdess, crema-d, msp-podcast)"]


def test_option_of_another_corpus_is_refused(tmp_path):
    out = sertk("prep", "emodb", str(tmp_path), str(tmp_path / "d"), "--include-song")
    assert out.returncode == 1
    assert "prep emodb: unknown option(s) include_song" in out.stderr and "Traceback" not in out.stderr
