#!/usr/bin/env python
"""Serve an exported model with Paddle Inference: the top-k for a history of MovieLens (original) movie ids.

    python export.py --CHECKPOINTS checkpoints/sasrec_config_ml-1m --output exported/sasrec
    python examples/predict.py exported/sasrec 1193,661,914,3408

Only ``paddle`` and the export folder are needed at serving time: ``items.txt`` maps original ids to the model's
item ids and back, ``export.json`` says how long a history the model reads.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bert4rec.cpu import import_paddle  # noqa: E402

import_paddle()  # CPU settings, and without Paddle's start-up messages
from bert4rec.export import Predictor  # noqa: E402


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__.strip().splitlines()[-4], file=sys.stderr)
        return 2
    folder = Path(sys.argv[1])
    rows = [line.split("\t") for line in (folder / "items.txt").read_text(encoding="utf-8").splitlines()]
    to_item = {original: int(item) for item, original, _title in rows}
    titles = {int(item): (original, title) for item, original, title in rows}
    wanted = [x.strip() for x in sys.argv[2].split(",") if x.strip()]
    unknown = [x for x in wanted if x not in to_item]
    if unknown or not wanted:
        print(f"error: unknown movie ids: {', '.join(unknown) or '(none given)'}", file=sys.stderr)
        return 2
    predictor = Predictor(folder)
    items, scores = predictor.recommend([[to_item[x] for x in wanted]])
    for rank, (item, score) in enumerate(zip(items[0], scores[0], strict=True), start=1):
        original, title = titles[int(item)]
        print(f"{rank:>3}  {original:>6}  {score:9.3f}  {title}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
