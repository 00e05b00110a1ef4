"""``imgcache inspect``: how a prompt would be answered, its exact key and entry and its semantic
candidates."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from ._common import CONFIG_ERROR, FAILURE, _fail


def inspect(
    prompt: Annotated[str, typer.Argument(help="The prompt to look up.")],
    param: Annotated[
        list[str] | None,
        typer.Option("--param", "-p", help="An output-changing parameter, NAME=VALUE (repeatable)."),
    ] = None,
    operation: Annotated[
        str,
        typer.Option("--op", help="What answers the prompt: openai.images.generate, or the name of "
                                  "a decorated function (module.qualname, or its name= option)."),
    ] = "openai.images.generate",
    namespace: Annotated[str | None, typer.Option("--namespace")] = None,
) -> None:
    """Show how a prompt would be answered: its exact key and entry, and the semantic
    candidates with their similarity and the verifier's decision on each."""
    from rich.console import Console
    from rich.table import Table

    from ..adapters.openai.wire import GENERATE_OPERATION, image_params
    from ..cache import Cache
    from ..errors import ImgcacheError
    from ..match.semantic.verifier import content_text
    from ..request import Request

    params: dict[str, Any] = {}
    for item in param or []:
        name, sep, value = item.partition("=")
        if not sep:
            _fail(f"--param {item!r} is not NAME=VALUE", CONFIG_ERROR)
        try:
            params[name] = json.loads(value)
        except ValueError:
            params[name] = value
    overrides = {"namespace": namespace} if namespace else {}
    console = Console()
    try:
        cache = Cache.from_env(**overrides)
        if operation == GENERATE_OPERATION:
            params = image_params(params)
        request = Request.build("generation", operation, prompt, params)
        hit = cache.lookup(request)
        matcher = cache.semantic
        proposals = matcher.propose(request) if matcher is not None else []
        candidates = [(p, cache.entry(p.candidate.key) is not None) for p in proposals]
        content = content_text(request.prompt)
        cache.close()
    except ImgcacheError as exc:
        _fail(str(exc), CONFIG_ERROR if isinstance(exc, ValueError) else FAILURE)
    console.print(f"[bold]prompt[/bold]      {request.prompt!r}")
    console.print(f"[bold]content[/bold]     {content!r}  (what the embedder sees)")
    console.print(f"[bold]scope[/bold]       {operation} {json.dumps(request.params, sort_keys=True)}")
    console.print(f"[bold]exact key[/bold]   {request.key}")
    if hit is None:
        console.print("[bold]exact entry[/bold] none")
    else:
        manifest = hit.manifest
        matched = manifest.get("matched")
        how = (f"a semantic alias of {matched['prompt']!r} (similarity {matched['similarity']}, "
               f"{matched['verdict']})" if matched else "made for this request")
        console.print(f"[bold]exact entry[/bold] in {hit.tier}: {how}")
    table = Table(title="semantic candidates", title_justify="left")
    for column in ("similarity", "verifier", "stored prompt", "reason", "entry"):
        table.add_column(column)
    for proposal, present in candidates:
        verdict = proposal.verdict
        table.add_row(f"{proposal.candidate.similarity:.3f}",
                      "[green]same[/green]" if verdict.same else "[red]different[/red]",
                      proposal.candidate.prompt[:80], verdict.reason[:80],
                      "present" if present else "gone")
    console.print(table if candidates else "semantic candidates: none above the similarity floor")
