"""Progress bars: the notebook widget when ipywidgets is installed, else the text bar (tqdm.auto would warn)."""
from __future__ import annotations

import importlib.util


def progress_bar(**kwargs):
    if importlib.util.find_spec("ipywidgets") is not None:
        from tqdm.auto import tqdm
    else:
        from tqdm import tqdm
    return tqdm(**kwargs)
