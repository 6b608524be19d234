"""`localllm chat [MODEL]`: the terminal chat app (Textual is imported only when it runs)."""

from __future__ import annotations

import localllm
from localllm.commands.plan import MODEL_HELP, context_arg


def register(sub) -> None:
    p = sub.add_parser(
        "chat",
        help="chat with a model in the terminal (Textual app)",
        description="Open the terminal chat: shows the hardware and the plan, loads the "
        "model, then chats. Conversations are kept in the user data folder "
        "($LOCALLLM_DATA overrides it).",
    )
    p.add_argument("model", nargs="?", default="auto", metavar="MODEL", help=MODEL_HELP + ' (default "auto")')
    p.add_argument("--ctx", type=context_arg, default=None, metavar="N", help="context window in tokens")
    p.add_argument(
        "--profile",
        default=None,
        metavar="NAME",
        help="plan for a hardware profile (profiles/*.toml or a path) instead of this machine",
    )
    p.add_argument("--system", default="", metavar="TEXT", help="system prompt for new chats")
    p.add_argument("--temperature", type=float, default=None, help="sampling temperature for new chats (0: greedy)")
    p.add_argument("--max-tokens", type=int, default=None, metavar="N", help="reply length limit for new chats")
    p.add_argument("--seed", type=int, default=None, help="sampling seed for new chats")
    p.set_defaults(func=run)


def run(args) -> int:
    from localllm.resolve import check  # here, not at the top: `localllm --help` stays fast

    # a missing file, a bad file or an unknown name is reported here, before the app opens;
    # what fits is for the app's startup screen to show
    path = check(args.model)
    model = str(path.absolute()) if path is not None else args.model  # a path stays one in the app
    hardware = localllm.load_profile(args.profile) if args.profile else None
    sampling = {
        k: v
        for k, v in (("temperature", args.temperature), ("max_tokens", args.max_tokens), ("seed", args.seed))
        if v is not None
    }
    try:
        localllm.SamplingOptions(**sampling)
    except ValueError as exc:
        raise localllm.LocalLLMError(str(exc)) from None
    from localllm.tui.launch import run as run_tui  # Textual loads only when the chat opens

    return run_tui(model, context=args.ctx, hardware=hardware, system_prompt=args.system, sampling=sampling)
