"""The Python API: the same library code as the command-line tools, for notebooks and scripts.

    import bert4rec as br
    data = br.Dataset.from_frame(df, user="user_id", item="item_id", time="timestamp")  # or Dataset.from_file
    data.save("data/mine")                      # the files gen_data_fin.py writes
    run = br.fit(data, config="bert_train/sasrec_config_ml-1m.json", checkpoints="runs/mine",
                 num_train_steps=2000, eval_every=500)     # keywords: the fields of bert4rec.config.TrainOptions
    run.results                                  # results.json
    run.recommend(users=["u196", "u22"], k=10)   # DataFrame: user, rank, item, score (+ title)
    run = br.load_run("runs/mine")               # any finished run folder, any model

Mistakes raise ``bert4rec.errors.UserError`` with the message the CLI would print. Nothing here prints Paddle's
start-up messages; ``progress=False`` silences the progress bars and the generator's summary lines too.
"""

from __future__ import annotations

import dataclasses
import hashlib
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bert4rec.errors import UserError

_GENERATE_RESERVED = ("raw_path", "output_dir", "user_col", "item_col", "time_col", "rating_col", "force")


def _generate_options(path: Path | None, columns: dict[str, str | None], options: dict[str, Any]):
    from bert4rec.data.options import GenerateOptions

    known = {f.name for f in dataclasses.fields(GenerateOptions)} - set(_GENERATE_RESERVED)
    unknown = sorted(set(options) - known)
    if unknown:
        raise UserError(f"unknown data option {unknown[0]!r} (options: {', '.join(sorted(known))})")
    return GenerateOptions(raw_path=path, **{f"{role}_col": name for role, name in columns.items()}, **options)


class Dataset:
    """An interaction log (a frame or a file) and the generator's options; ``save`` writes the generated files."""

    def __init__(self, options, frame=None) -> None:
        self.options = options
        self._frame = frame
        self.path: Path | None = None  # the generated folder, once saved
        self.stats: dict | None = None

    @classmethod
    def from_frame(cls, frame, user: str = "user_id", item: str = "item_id", time: str | None = None,
                   rating: str | None = None, **options: Any) -> Dataset:
        """A pandas DataFrame (or a pyarrow Table; polars: ``.to_pandas()``); ``options``: the generator's
        (``min_item_count``, ``min_user_len``, ``min_rating``, ``holdout``, ``max_seq_length``, ...)."""
        import pyarrow as pa

        from bert4rec.data.raw import RawInput
        from bert4rec.data.tables import FRAME_FORMAT

        columns = {"user": user, "item": item, "time": time, "rating": rating}
        wanted = [c for c in columns.values() if c]
        if not isinstance(frame, pa.Table):
            if not hasattr(frame, "columns"):
                raise UserError(f"from_frame: expected a pandas DataFrame or a pyarrow Table, got {type(frame)!r}")
            missing = [c for c in wanted if c not in frame.columns]
            if missing:
                raise UserError(f"from_frame: the frame has no column {missing[0]!r} (columns: "
                                f"{', '.join(map(str, frame.columns))})")
            frame = pa.Table.from_pandas(frame[wanted], preserve_index=False)
        table = frame.select(wanted) if all(c in frame.column_names for c in wanted) else frame
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        digest = sink.getvalue().to_pybytes()  # what the up-to-date check and stats.json fingerprint
        raw = RawInput(data=hashlib.sha256(digest).digest(), label="DataFrame", path=None, member=None,
                       format=FRAME_FORMAT, table=table)
        return cls(_generate_options(None, columns, {"data_name": "frame", **options}), raw)

    @classmethod
    def from_file(cls, path: str | Path, user: str | None = None, item: str | None = None,
                  time: str | None = None, rating: str | None = None, **options: Any) -> Dataset:
        """Any input ``gen_data_fin.py`` reads (CSV / TSV / Parquet / RecBole / MovieLens / ``user item``);
        columns are detected when not given; ``options`` as for ``from_frame`` plus ``format`` and ``sep``."""
        if not Path(path).exists():
            raise UserError(f"{path}: no such file or directory")
        return cls(_generate_options(Path(path), {"user": user, "item": item, "time": time, "rating": rating},
                                     options))

    def save(self, directory: str | Path, progress: bool | None = None, force: bool = False) -> Dataset:
        """Generate the training and evaluation files into ``directory`` (as ``gen_data_fin.py --output_dir``);
        a folder already holding this output is kept as it is (``force`` regenerates)."""
        from bert4rec.data.generate import generate_dataset

        self.options.output_dir = Path(directory)
        self.options.force = force
        log = print if progress is not False else (lambda *_: None)
        self.stats = generate_dataset(self.options, progress=progress, log=log, frame=self._frame)
        self.path = Path(directory)
        return self


class Run:
    """A finished training run: ``results`` (results.json) and ``recommend``."""

    def __init__(self, trained) -> None:
        self.trained = trained

    @property
    def path(self) -> Path:
        return self.trained.path

    @property
    def results(self) -> dict:
        return self.trained.results

    def recommend(self, users: Sequence[object] | None = None, histories: Sequence[Sequence[object]] | None = None,
                  k: int = 10, progress: bool | None = None):
        """Top-``k`` as a DataFrame ``user, rank, item, score`` (+ ``title``): known ``users`` by their original
        ids (every user when neither is given), or new ``histories`` of original item ids (oldest first)."""
        from bert4rec.recommending import recommendations

        return recommendations(self.trained, users=users, histories=histories, k=k, progress=progress)

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, model={self.results.get('model')!r})"


def load_run(run_dir: str | Path, data_dir: str | Path | None = None, kernels: str = "auto") -> Run:
    """Any finished run folder (``trainrec.py --CHECKPOINTS``), any model, with its selected weights."""
    from bert4rec.cpu import import_paddle

    import_paddle()
    from bert4rec.trained import load_run as load_trained

    return Run(load_trained(Path(run_dir), Path(data_dir) if data_dir else None, kernels))


def fit(data: Dataset | str | Path, config: str | Path, checkpoints: str | Path | None = None,
        progress: bool | None = None, **options: Any) -> Run:
    """Train on ``data`` (a saved ``Dataset``, or a folder the generator wrote), select on validation, test
    once; ``options`` are ``TrainOptions`` fields (``num_train_steps``, ``eval_every``, ``batch_size``, ...);
    ``config_overrides={"hidden_dropout_prob": 0.2}`` sets keys of the model config over its JSON file."""
    from bert4rec.config import TrainOptions
    from bert4rec.cpu import import_paddle

    if isinstance(data, Dataset):
        if data.path is None:
            data.save(tempfile.mkdtemp(prefix="bert4rec-data-"), progress=progress)
        data_dir = data.path
    else:
        data_dir = Path(data)
        if not (data_dir / "vocab.txt").is_file():
            raise UserError(f"{data_dir}: not a generated data folder (no vocab.txt); save a Dataset there first")
    config = Path(config)
    opts = TrainOptions.for_data(data_dir, config, Path(checkpoints) if checkpoints else Path("checkpoints") /
                                 config.stem, progress=progress is not False, **options)
    import_paddle()
    from bert4rec.train import train

    train(opts)
    return load_run(opts.checkpoints, data_dir, opts.kernels)
