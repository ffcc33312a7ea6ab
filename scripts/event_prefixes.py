"""Print, per watched subscription, the `subjectPrefixes` parameter of infra/events.bicep.

    python -m scripts.event_prefixes schemas/examples/reference-lab.yaml
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from reconciler import desired
from reconciler.events import subject_prefixes


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    state = desired.load(Path(argv[0]))
    print(json.dumps(subject_prefixes(state), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
