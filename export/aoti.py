"""The scorer as an AOTInductor package: `torch.export` (non-strict, the user, candidate and position
axes dynamic), then
Inductor's ahead-of-time compile into model.pt2, which the C++ ranker loads with
`torch::inductor::AOTIModelPackageLoader` and Python with `torch._inductor.aoti_load_package`.

TorchScript's successor. The exported graph calls no fbgemm operator (the request scorer reads the
tables' rows with aten's embedding), and the package is compiled C++ for this CPU: compiling takes
about a minute on two cores.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Callable

import torch

from export.request_scorer import INPUT_NAMES, USER_INPUTS, RequestInputs, RequestScorer


def export_program(scorer: RequestScorer, example: RequestInputs, max_candidates: int) -> torch.export.ExportedProgram:
    """The scorer's graph for 1 to `max_candidates` candidates of 1 to `max_candidates` users, 1 to
    the model's length of user sequence positions (the ranker sends only as many as the longest user
    sequence of a batch fills), and any number of candidate sequence elements. `example` should have
    more than one user, fewer users than candidates and more elements than either, so that no axis is
    taken for a constant or for another."""
    most = max(max_candidates, example.candidates)
    users, candidates = torch.export.Dim("users", min=1, max=most), torch.export.Dim("candidates", min=1, max=most)
    user_positions = torch.export.Dim("user_positions", min=1, max=scorer.model.seq_len)
    elements = torch.export.Dim("elements", min=0, max=most * scorer.model.seq_len * len(scorer.model.gsu_names))
    dynamic = {name: {0: users if name in USER_INPUTS else candidates} for name in INPUT_NAMES}
    dynamic["user_seq_ids"][2] = dynamic["user_seq_side"][2] = user_positions
    dynamic["seq_ids"] = dynamic["seq_side"] = dynamic["seq_owner"] = {0: elements}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)
        return torch.export.export(scorer.eval(), tuple(example), dynamic_shapes=dynamic, strict=False)


def constant_names(package: Callable) -> set[str]:
    """The names of the package's constants that a caller may replace (its parameters and buffers,
    not the constants folded from them)."""
    return set(package.loader.get_constant_fqns())


def save_aoti(scorer: RequestScorer, path: Path, example: RequestInputs, max_candidates: int,
              threads: int = 1, export_id: str = "") -> Callable:
    """Compiles the package to `path` for `threads` intra-op threads and returns it as loaded back
    from disk (what a ranker will run). Inductor writes its kernels for a thread count: for more than
    one, OpenMP regions and atomic scatters, which a one-thread ranker pays for on every call
    (measured: 7.7 ms against 4.7 ms for a 200-candidate forward); for one, plain loops."""
    program = export_program(scorer, example, max_candidates)
    # Constants are folded when the package first runs, not at compile time: folding at compile time
    # (or freezing) bakes parameters into new constants a push could not reach. The ranker refolds
    # after writing a push into the inactive constant buffer.
    options = {"cpp.threads": threads, "aot_inductor.use_runtime_constant_folding": True,
               "aot_inductor.metadata": {"export_id": export_id}}  # the export the package belongs to
    with warnings.catch_warnings(), torch._inductor.config.patch(options):
        warnings.filterwarnings("ignore", category=UserWarning)
        torch._inductor.aoti_compile_and_package(program, package_path=str(path))
    return torch._inductor.aoti_load_package(str(path))
