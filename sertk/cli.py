"""The ``sertk`` command line: one command per pipeline stage, each a thin wrapper over one library call.

Library modules are imported inside the commands so that ``sertk --help`` stays fast.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Literal

import typer
from rich.markup import escape
from typer.core import TyperGroup
from typer.exceptions import Abort, TyperException

from sertk.errors import SertkError
from sertk.utils import console, reuse_freed_memory

app = typer.Typer(
    name="sertk",
    help="Speech emotion recognition toolkit: Kaldi-style stages for IEMOCAP "
    "(0 synth, 1 prep, 2 folds, 3 feats, 4 augment, 5 train, 6 eval, 7 score).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)

_DEVICE_HELP = "auto (cuda if available), cpu or cuda"
Precision = Literal["fp32", "bf16", "fp16"]


@app.command(
    epilog="Examples: sertk synth corpus/IEMOCAP_full_release --size small --seed 0 --nj 2\n\n"
    "sertk synth corpus/emodb --corpus emodb --size tiny"
)
def synth(
    out: Path = typer.Argument(..., help="Directory to write (it becomes the corpus root)."),
    corpus: str = typer.Option(
        "iemocap", help="Layout to write: iemocap, emodb, ravdess, crema-d or msp-podcast."
    ),
    size: str = typer.Option(
        "tiny",
        help="tiny (a few minutes of audio, for tests), small (demo-sized) or, for iemocap only, full "
        "(~10,000 utts, IEMOCAP-sized).",
    ),
    seed: int = typer.Option(0, help="Random seed; the corpus is deterministic per seed."),
    nj: int = typer.Option(1, help="Worker processes for audio synthesis."),
) -> None:
    """Stage 0: write a SYNTHETIC corpus in a real corpus's exact layout (not real emotions)."""
    from sertk.corpora.synthetic import generate_corpus

    summary = generate_corpus(out, size=size, seed=seed, nj=nj, corpus=corpus)
    console.print(
        f"synth: SYNTHETIC {summary['layout']}-format corpus (not real emotions): {summary['utterances']} "
        f"utterances, {summary['hours']:.2f} h, {summary['speakers']} speakers -> {summary['root']}"
    )


@app.command(
    epilog="Examples: sertk prep iemocap /data/IEMOCAP_full_release data/all\n\n"
    "sertk prep emodb /data/emodb data/emodb --classes neu,hap,ang,sad,bor\n\n"
    "sertk prep ravdess /data/ravdess data/ravdess --include-song\n\n"
    "IEMOCAP=/data/IEMOCAP_full_release sertk prep"
)
def prep(
    corpus: str = typer.Argument(
        "iemocap", help="Corpus name: iemocap, emodb, ravdess, crema-d or msp-podcast (synthetic trees too)."
    ),
    root: Path | None = typer.Argument(None, help="Corpus root (iemocap: default $IEMOCAP)."),
    out: Path | None = typer.Argument(None, help="Data dir to write (default data/<corpus>)."),
    classes: str | None = typer.Option(
        None,
        help="Classes in label order; a+b merges b into a (default: the corpus's 4 classes, "
        "neu,hap+exc,ang,sad for iemocap, neu,hap,ang,sad for the others).",
    ),
    style: str | None = typer.Option(None, help="iemocap only: all (default), impro or script."),
    include_song: bool = typer.Option(False, help="ravdess only: keep the song files too."),
) -> None:
    """Stage 1: parse a corpus tree into a Kaldi-style data dir (skipped when it is up to date)."""
    from sertk.corpora import corpus_spec, prepare

    spec = corpus_spec(corpus)
    if root is None:
        env = os.environ.get("IEMOCAP") if corpus == "iemocap" else None
        if not env:
            hint = (
                "pass ROOT or set IEMOCAP=/path/to/IEMOCAP_full_release"
                if corpus == "iemocap"
                else "pass ROOT"
            )
            raise SertkError(f"no {spec.title} root: {hint} (or generate a synthetic one with `sertk synth`)")
        root = Path(env)
        console.print(f"prep: reading IEMOCAP from $IEMOCAP = {root}")
    options = {}
    if style is not None:
        options["style"] = style
    if include_song:
        options["include_song"] = True
    report = prepare(corpus, root, out or Path("data") / corpus, classes=classes, **options)
    console.print(report.summary())


@app.command(epilog="Example: sertk validate data/all")
def validate(data: Path = typer.Argument(..., help="Data dir to check.")) -> None:
    """Check a data dir as Kaldi's validate_data_dir does and print a one-line summary."""
    from sertk.data import validate_data_dir

    console.print(validate_data_dir(data))


def _protocol_help() -> str:
    from sertk.data.folds import PROTOCOLS

    return "Protocol: " + "; ".join(
        f"[bold]{name}[/bold]: {line}" for name, (_, line, _) in PROTOCOLS.items()
    )


Protocol = Literal[
    "loso-session",
    "loso-session-nextval",
    "loso-speaker",
    "loso-speaker-noval",
    "loso-speaker-nextval",
    "speaker-kfold",
    "kfold",
    "random",
    "official",
]
Interchange = Literal["emobox", "superb"]


class FoldsGroup(TyperGroup):
    """``sertk folds DATA OUT ...`` is ``sertk folds make DATA OUT ...``; import and export are subcommands."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["make", *args]
        return super().parse_args(ctx, args)


folds_app = typer.Typer(
    cls=FoldsGroup,
    help="Stage 2: make folds (sertk folds \\[make] DATA OUT --protocol P), or import/export benchmark fold files.",
    no_args_is_help=True,
)
app.add_typer(folds_app, name="folds")


@folds_app.command(
    "make",
    epilog="Examples: sertk folds data/all data/all/folds.json --protocol loso-session\n\n"
    "sertk folds data/all folds.json --protocol kfold --ratios 0.8,0.1,0.1 --repeats 10",
)
def folds_make(
    data: Path = typer.Argument(..., help="Data dir."),
    out: Path = typer.Argument(
        ..., help="folds.json to write (its record: <stem>.provenance.json beside it)."
    ),
    protocol: Protocol = typer.Option("loso-session", help=_protocol_help()),
    ratios: str = typer.Option("0.55,0.25,0.2", help="train,valid,test ratios (kfold, random)."),
    repeats: int = typer.Option(5, help="Folds (kfold, speaker-kfold) or random splits (random)."),
    valid_ratio: float = typer.Option(
        0.1, help="loso-session: stratified share of the training sessions for validation."
    ),
    test_partitions: str = typer.Option(
        "Test1", help="official: test partitions, one fold each (Test1,Test2)."
    ),
    seed: int = typer.Option(0, help="Random seed."),
) -> None:
    """Stage 2: speaker-independent, k-fold, random or official folds (skipped when up to date)."""
    from sertk import provenance
    from sertk.data import read_data_dir
    from sertk.data.folds import FoldOptions, folds_record, make_folds, write_folds

    try:
        ratio_values = tuple(float(r) for r in ratios.split(","))
    except ValueError:
        raise SertkError(f"--ratios: expected three numbers like 0.55,0.25,0.2, got {ratios!r}") from None
    if len(ratio_values) != 3:
        raise SertkError(f"--ratios: expected three numbers like 0.55,0.25,0.2, got {ratios!r}")
    if not 0 <= valid_ratio < 1:
        raise SertkError(f"--valid-ratio: expected a share in [0, 1), got {valid_ratio}")
    data_dir = read_data_dir(data)
    tests = tuple(p for p in test_partitions.split(",") if p)
    opts = FoldOptions(
        ratios=ratio_values, repeats=repeats, valid_ratio=valid_ratio, seed=seed, test_partitions=tests
    )
    record = folds_record(data_dir, protocol, opts)
    if out.is_file() and not provenance.check(provenance.record_path(out), record):
        console.print(f"folds: {out} is up to date ({protocol}), skipped")
        return
    result = make_folds(data_dir, protocol, opts)
    write_folds(out, result, data_dir, record)
    console.print(f"folds: {protocol}, {len(result['folds'])} folds ({_fold_sizes(result)}) -> {out}")


def _fold_sizes(result: dict) -> str:
    sizes = ", ".join(
        f"{f['name']} {len(f['train'])}/{len(f['valid'])}/{len(f['test'])}" for f in result["folds"]
    )
    return f"train/valid/test: {sizes}"


@folds_app.command(
    "import",
    epilog="Examples: sertk folds import --format emobox EmoBox/data/iemocap data/all data/all/folds_emobox.json\n\n"
    "sertk folds import --format superb s3prl/downstream/emotion/meta_data data/all folds_superb.json",
)
def folds_import(
    source: Path = typer.Argument(
        ..., help="EmoBox dataset dir (fold_<k>/) or s3prl meta_data dir (Session<k>/)."
    ),
    data: Path = typer.Argument(..., help="Data dir whose utterances the file's entries are matched to."),
    out: Path = typer.Argument(..., help="folds.json to write."),
    format: Interchange = typer.Option(..., "--format", help="emobox or superb."),
) -> None:
    """Read a benchmark's published folds into folds.json (speakers come from the data dir, never the file)."""
    from sertk.data import read_data_dir
    from sertk.data.folds import write_folds
    from sertk.data.interchange import import_emobox, import_superb

    data_dir = read_data_dir(data)
    result = (import_emobox if format == "emobox" else import_superb)(source, data_dir)
    write_folds(out, result, data_dir)
    console.print(f"folds: imported {format}, {len(result['folds'])} folds ({_fold_sizes(result)}) -> {out}")


@folds_app.command(
    "export",
    epilog="Example: sertk folds export --format superb data/all/folds.json data/all meta_data/",
)
def folds_export(
    folds: Path = typer.Argument(..., help="folds.json to export."),
    data: Path = typer.Argument(..., help="Its data dir."),
    out: Path = typer.Argument(..., help="Directory to write the benchmark's files into."),
    format: Interchange = typer.Option(..., "--format", help="emobox or superb."),
) -> None:
    """Write folds.json in EmoBox's or s3prl/SUPERB's file layout."""
    from sertk.data import read_data_dir
    from sertk.data.folds import read_folds
    from sertk.data.interchange import export_emobox, export_superb

    data_dir = read_data_dir(data)
    written = (export_emobox if format == "emobox" else export_superb)(
        read_folds(folds, data_dir), data_dir, out
    )
    console.print(f"folds: exported {len(written)} {format} file(s) -> {out}")


@folds_app.command("list", epilog="Example: sertk folds list data/all/folds.json --fold '1 3'")
def folds_list(
    folds: Path = typer.Argument(..., help="folds.json."),
    fold: str = typer.Option("all", help="all, a fold number or name, or a list: '1 3'."),
) -> None:
    """Print the names of the selected folds, one a line (what recipes make one job per fold of)."""
    from sertk.data.folds import read_folds, select_folds

    for spec in select_folds(read_folds(folds), fold):
        print(spec["name"])


@app.command(
    epilog="Examples: sertk feats data/all dump/all/logmel40 --feat logmel40 --format hdf5 --nj 2\n\n"
    "sertk feats data/all dump/all/lexical --feat lexical --feat-config conf/feats/lexical.yaml\n\n"
    "sertk feats data/all dump/all/ssl --feat ssl --feat-config ssl.yaml --device cuda"
)
def feats(
    data: Path = typer.Argument(..., help="Data dir."),
    out: Path = typer.Argument(..., help="Feature dir to write."),
    feat: str = typer.Option(
        "logmel40", help="Feature type (see docs/features.md), or lexical: word vectors of the text table."
    ),
    feat_config: Path | None = typer.Option(None, help="YAML overriding the feature's defaults."),
    format: Literal["hdf5", "ark"] = typer.Option("hdf5", "--format", help="hdf5 or ark."),
    nj: int = typer.Option(1, help="Worker processes (CPU extraction)."),
    device: str = typer.Option(
        "cpu", help="cpu, cuda or auto: where features are computed (SSL layers: a GPU)."
    ),
) -> None:
    """Stage 3: compute features of every utterance and dump them (HDF5 or Kaldi ark/scp); skipped when up to date."""
    from sertk.features.dump import dump_features

    dump_features(data, out, feat=feat, feat_config=feat_config, fmt=format, nj=nj, device=device)


@app.command(
    epilog="Examples: sertk augment data/all data/all/folds.json data/all_sp --speed 0.9,1.1\n\n"
    "sertk augment data/all data/all/folds.json data/all_aug --speed 0.9,1.1 --noise /data/musan "
    "--snr 0:15 --rir /data/RIRS_NOISES --seed 0 --nj 2"
)
def augment(
    data: Path = typer.Argument(..., help="Data dir."),
    folds: Path = typer.Argument(..., help="folds.json of DATA: the train parts get the copies."),
    out: Path = typer.Argument(..., help="Data dir to write (originals + copies, OUT/folds.json, OUT/wav/)."),
    speed: str = typer.Option("", help="Speed factors, e.g. 0.9,1.1: one sp<f>-<utt> copy each."),
    noise: Path | None = typer.Option(
        None,
        help="Noise wavs (a MUSAN root uses its noise/ part; else every wav below): one noise-<utt> copy.",
    ),
    snr: str = typer.Option("0:15", help="SNR range in dB of the noise copies, LOW:HIGH (uniform)."),
    rir: Path | None = typer.Option(
        None, help="Room impulse responses (a RIRS_NOISES root, or any dir of wavs): one rir-<utt> copy."
    ),
    seed: int = typer.Option(0, help="Random seed (noise file, offset, SNR, RIR of each copy)."),
    nj: int = typer.Option(1, help="Worker processes."),
) -> None:
    """Stage 4: offline augmentation: perturbed copies of the folds' training utterances in a new data dir."""
    from sertk.augment.offline import augment_data_dir, parse_snr, parse_speeds

    augment_data_dir(
        data,
        folds,
        out,
        speeds=parse_speeds(speed),
        noise=noise,
        snr=parse_snr(snr),
        rir=rir,
        seed=seed,
        nj=nj,
    )


@app.command(
    epilog="Examples: sertk train --arch attn-pool   (inside egs/iemocap after stage 4)\n\n"
    "sertk train --train-config conf/crnn_discriminative.yaml --fold 1 --epochs 5 --resume\n\n"
    "sertk train --train-config conf/rlc_gca_lstm/s3_lexical.yaml --lexical-feats dump/rlc_gca_lstm/lexical\n\n"
    "sertk train --train-config conf/ssl/onthefly.yaml --feats dump/ssl/wave --ssl-encoder dump/ssl/ssl.yaml"
)
def train(
    arch: str | None = typer.Option(
        None, help="Model architecture (registry name); default from the config."
    ),
    train_config: Path | None = typer.Option(None, help="Experiment YAML (default conf/<system>.yaml)."),
    data: Path | None = typer.Option(None, help="Data dir (default data/<system>)."),
    feats: Path | None = typer.Option(None, help="Feature dir (default dump/<system>/<feat>)."),
    folds: Path | None = typer.Option(None, help="folds.json (default <data>/folds.json)."),
    fold: str = typer.Option("all", help="all, a fold number or name, or a list: '1 3'."),
    exp: Path | None = typer.Option(None, help="Experiment dir (default exp/<system>)."),
    epochs: int | None = typer.Option(None, help="Override the config's train.epochs."),
    precision: Precision | None = typer.Option(
        None, help="Override train.precision: fp32, bf16 or fp16 (CUDA)."
    ),
    device: str = typer.Option("auto", help=_DEVICE_HELP),
    resume: bool = typer.Option(
        False, help="Continue unfinished folds from their last checkpoint (same provenance only)."
    ),
    overwrite: bool = typer.Option(
        False, help="Retrain folds (and clear an exp dir) made from other inputs."
    ),
    lexical_feats: Path | None = typer.Option(
        None, help="Word-vector dir (sertk feats --feat lexical) for a config with model.lexical_dim > 0."
    ),
    memory_gb: float = typer.Option(8.0, help="Features beyond this many GiB per fold stream from the dump."),
    set_: list[str] = typer.Option(
        [],
        "--set",
        help="Override a config key: --set input.specaugment.freq_masks=2 (YAML value; repeatable).",
    ),
    ssl_encoder: Path | None = typer.Option(
        None, help="An ssl feature YAML (checkpoint: PATH ...) run inside the model on --feat wave input."
    ),
    nproc: int = typer.Option(
        1, help="Data-parallel processes on this machine (one per GPU; gloo on CPU); torchrun works too."
    ),
    plan: bool = typer.Option(
        False,
        help="Only prepare: open EXP (--overwrite clears a changed one), clear stale folds, write replay.sh.",
    ),
    planned: bool = typer.Option(
        False,
        help="A job of a --plan'ed EXP: refuse if it changed, write nothing but the fold dirs (parallel folds).",
    ),
) -> None:
    """Stage 5: train one model per fold (checkpoint every epoch, exact resume; up-to-date folds are skipped)."""
    from sertk.train.launch import in_distributed_job, relaunch

    if nproc > 1 and not plan and not in_distributed_job():
        relaunch(nproc)  # the same command line as ranks 0..nproc-1, which land in the branch below
        return
    from sertk.train.run import TrainOptions
    from sertk.train.run import train as run_training

    run_training(
        TrainOptions(
            arch=arch,
            train_config=train_config,
            data=data,
            feats=feats,
            folds=folds,
            fold=fold,
            exp=exp,
            epochs=epochs,
            precision=precision,
            device=device,
            resume=resume,
            overwrite=overwrite,
            lexical_feats=lexical_feats,
            memory_gb=memory_gb,
            overrides=_parse_overrides(set_),
            ssl_encoder=ssl_encoder,
            nproc=nproc,
            plan=plan,
            planned=planned,
        )
    )


def _parse_overrides(items: list[str]) -> dict:
    """``KEY=VALUE`` pairs, VALUE read as YAML (``2``, ``true``, ``[1, 2]``, ``ce``)."""
    import yaml

    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SertkError(f"--set {item!r}: expected KEY=VALUE, e.g. train.lr=0.001")
        try:
            overrides[key] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise SertkError(f"--set {item!r}: the value is not valid YAML") from None
    return overrides


@app.command(
    name="eval",
    epilog="Examples: sertk eval exp/crnn_discriminative --fold all\n\n"
    "sertk eval exp/lstm_attention --fold 1 --plot-attention 4\n\n"
    "sertk eval exp/cnn_blstm_vtlp --tta vtlp   (11 VTLP copies, majority vote)\n\n"
    "sertk eval exp/crnn_discriminative --data ../emodb/data/emodb_crnn_att --feats ../emodb/dump/emodb_crnn_att/logmel40",
)
def evaluate(
    exp: Path = typer.Argument(..., help="Experiment dir written by sertk train."),
    fold: str = typer.Option("all", help="all, a fold number or name, or a list: '1 3'."),
    device: str = typer.Option("auto", help=_DEVICE_HELP),
    checkpoint: str = typer.Option("best.pt", help="Checkpoint file name inside each fold dir."),
    plot_attention: int = typer.Option(
        0, help="Also plot the attention weights of N test utterances per fold (<fold>/attention/*.png)."
    ),
    tta: Literal["config", "none", "vtlp"] = typer.Option(
        "config",
        help="Test-time augmentation: config (the config's input.tta), none, or vtlp (11 copies, vote).",
    ),
    data: Path | None = typer.Option(
        None, help="Cross-corpus: score the fold models on this other data dir."
    ),
    feats: Path | None = typer.Option(
        None, help="Cross-corpus: the other data dir's features (same feature config)."
    ),
    out: Path | None = typer.Option(
        None, help="Cross-corpus output dir (default EXP/cross_<data dir name>)."
    ),
) -> None:
    """Stage 6: posteriors and predictions for each fold's test set (posteriors.tsv; skipped when up to date)."""
    from sertk.evaluate.inference import EvalOptions
    from sertk.evaluate.inference import evaluate as run_eval

    opts = EvalOptions(fold=fold, device=device, checkpoint=checkpoint, tta=None if tta == "config" else tta)
    if data is not None or feats is not None:
        from sertk.evaluate.cross import evaluate_cross

        if data is None or feats is None:
            raise SertkError("--data and --feats go together (the other corpus's data dir and its features)")
        evaluate_cross(exp, data, feats, out, opts)
        return
    run_eval(exp, opts)
    if plot_attention:
        from sertk.evaluate.attention import plot_attention as run_plot

        run_plot(exp, plot_attention, fold=fold, device=device, checkpoint=checkpoint)


@app.command(
    epilog="Examples: sertk dispatch exp/crnn_discriminative/log/train_eval.jobs --cmd local --nj 2\n\n"
    "sertk dispatch grid.jobs --cmd slurm --nj 10 --slurm-config conf/slurm.yaml --log-dir exp"
)
def dispatch(
    jobs: Path = typer.Argument(..., help="Jobs file: one job a line, NAME<TAB>shell command."),
    cmd: str = typer.Option("local", help="Engine: local (this machine) or slurm (one sbatch job array)."),
    nj: int = typer.Option(
        1, help="At most this many jobs at a time (local: each gets cores/N cores, one GPU)."
    ),
    slurm_config: Path | None = typer.Option(
        None, help="--cmd slurm: YAML of partition, gpus_per_job, cpus_per_task, time, mem, extra_args."
    ),
    log_dir: Path | None = typer.Option(
        None, help="Where LOG_DIR/NAME.log go (default: beside the jobs file)."
    ),
    gpus_per_job: int = typer.Option(
        1, help="--cmd local: GPUs per job when there are any (sertk train --nproc N wants N)."
    ),
) -> None:
    """Run a jobs file N jobs at a time; failed jobs are listed with their logs and the exit status is 1."""
    from sertk.dispatch import dispatch as run_dispatch

    run_dispatch(jobs, cmd, nj, log_dir, slurm_config, gpus_per_job)


@app.command(epilog="Example: sertk score exp/crnn_discriminative")
def score(exp: Path = typer.Argument(..., help="Experiment dir with evaluated folds.")) -> None:
    """Stage 7: results.json, RESULTS.md, confusion matrix and learning-curve PNGs."""
    from sertk.evaluate.score import score_experiment

    score_experiment(exp)


@app.command(epilog="Example: sertk analyze exp/cnn_blstm_vtlp")
def analyze(exp: Path = typer.Argument(..., help="Experiment dir with evaluated folds.")) -> None:
    """Per-fold table (fold, session, gender, WA, UA) and 1st/2nd-choice accuracy on unanimous vs ambiguous utterances."""
    from sertk.evaluate.analysis import analyze_experiment

    analyze_experiment(exp)


@app.command(
    epilog="Examples: sertk compare exp/crnn_* --out exp/compare_crnn.md   (HTML report: exp/compare_crnn.html)\n\n"
    "sertk compare exp/crnn_* --out t.md --baseline exp/crnn_discriminative --test sign-flip --seed 1"
)
def compare(
    exps: list[Path] = typer.Argument(..., help="Scored experiment dirs."),
    out: Path = typer.Option(
        ..., help="Markdown file to write (a PNG of confusion matrices goes beside it)."
    ),
    title: str | None = typer.Option(None, help="Table title."),
    html: Path | None = typer.Option(
        None, help="Self-contained HTML report to write (default: OUT with the suffix .html)."
    ),
    baseline: str | None = typer.Option(
        None, help="Reference row of the paired tests: one of EXP... or its row name (default: best mean UA)."
    ),
    bootstrap: int = typer.Option(1000, help="Bootstrap resamples for the 95% intervals (0: none)."),
    seed: int = typer.Option(0, help="Seed of the bootstrap resamples."),
    test: str = typer.Option(
        "t", help="Test on per-fold UA that decides the marks: t (paired t-test) or sign-flip (exact)."
    ),
    alpha: float = typer.Option(0.05, help="Significance level of the marks, after Holm's correction."),
) -> None:
    """Compare systems: UA, WA, 95% bootstrap CIs, paired tests against a reference, paper's numbers, recall."""
    from sertk.evaluate.compare import CompareOptions, compare_experiments

    options = CompareOptions(baseline=baseline, n_boot=bootstrap, seed=seed, alpha=alpha, test=test)
    console.print(compare_experiments(exps, out, title=title, html=html, options=options))


@app.command(
    epilog="Examples: sertk package exp/crnn_discriminative/fold1 models/crnn_fold1\n\n"
    "sertk package exp/crnn_discriminative models/crnn   (every fold: an ensemble)"
)
def package(
    model: Path = typer.Argument(..., help="A fold dir or best.pt (one model), or an exp dir (all folds)."),
    out: Path = typer.Argument(..., help="Package directory to write."),
) -> None:
    """Write a self-contained model package: weights, arch, feature config, normalisation, classes."""
    from sertk.deploy.package import make_package

    make_package(model, out)


@app.command(
    epilog="Examples: sertk infer models/crnn_fold1 clips/ --out preds.jsonl\n\n"
    "sertk infer exp/crnn_discriminative talk.wav --window 3 --hop 1 --format tsv"
)
def infer(
    model: Path = typer.Argument(..., help="Package, ensemble of packages, best.pt, fold dir or exp dir."),
    inputs: list[Path] = typer.Argument(..., help="Audio files, directories or wav.scp files."),
    out: Path | None = typer.Option(None, help="File to write (default: stdout)."),
    format: Literal["jsonl", "tsv"] = typer.Option("jsonl", "--format", help="jsonl or tsv."),
    window: float | None = typer.Option(None, help="Also score windows of this many seconds."),
    hop: float | None = typer.Option(None, help="Seconds between window starts (with --window)."),
    batch_size: int = typer.Option(32, help="Files per batch."),
    device: str = typer.Option("auto", help=_DEVICE_HELP),
) -> None:
    """Emotion posteriors for audio files (any rate or channels); fold models are averaged."""
    from sertk.deploy.infer import InferOptions
    from sertk.deploy.infer import infer as run_infer

    run_infer(model, inputs, out, InferOptions(format, window, hop, batch_size, device))


@app.command(
    epilog="Examples: sertk export models/crnn_fold1 crnn.onnx --format onnx\n\n"
    "sertk export exp/attention_pooling_cnn/fold1 ap.pt --format torchscript --from-waveform"
)
def export(
    model: Path = typer.Argument(..., help="One package, best.pt or fold dir."),
    out: Path = typer.Argument(..., help="Network file to write (OUT.json gets its interface)."),
    format: Literal["torchscript", "onnx"] = typer.Option(
        "torchscript", "--format", help="torchscript or onnx."
    ),
    from_waveform: bool = typer.Option(False, help="Include the feature transform (waveform input)."),
) -> None:
    """Export the network (features or waveform -> posteriors) with a parity check against PyTorch."""
    from sertk.deploy.export import export_model

    export_model(model, out, fmt=format, from_waveform=from_waveform)


def main() -> None:
    """Console entry point: user errors become one line on stderr and exit status 1."""
    try:
        reuse_freed_memory()  # SERTK_MALLOC=reuse: faster CPU training, more memory
        code = app(standalone_mode=False)
    except SertkError as err:
        console.print(f"[bold red]error:[/bold red] {escape(str(err))}", soft_wrap=True)
        sys.exit(1)
    except TyperException as err:
        # A usage error (bad option, missing argument, invalid choice): one line, as every other user error,
        # instead of Typer's box. Typer 0.29 raises them as TyperException subclasses with a ctx.
        ctx = getattr(err, "ctx", None)
        if type(err).__name__ == "NoArgsIsHelpError" and ctx is not None:
            console.print(ctx.get_help(), markup=False)
            sys.exit(0)
        command = ctx.command_path if ctx is not None else "sertk"
        console.print(
            f"[bold red]error:[/bold red] {command}: {escape(err.format_message())}", soft_wrap=True
        )
        sys.exit(2)
    except Abort:
        console.print("interrupted")
        sys.exit(130)
    except KeyboardInterrupt:
        console.print("interrupted")
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
