"""`localllm chat [MODEL]`: the terminal chat app (Textual is imported only when it runs)."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("chat", help="chat with a model in the terminal (Textual app)",
                       description="Open the terminal chat: shows the hardware and the plan, loads the "
                                   "model, then chats. Conversations are kept in the user data folder "
                                   "($LOCALLLM_DATA overrides it).")
    p.add_argument("model", nargs="?", default="auto",
                   help='"auto" (default), a catalog name (name or name:quant), or a .gguf file / ONNX folder')
    p.add_argument("--ctx", type=int, default=None, metavar="N", help="context window in tokens")
    p.add_argument("--profile", default=None, metavar="NAME",
                   help="plan for a hardware profile (profiles/*.toml or a path) instead of this machine")
    p.add_argument("--system", default="", metavar="TEXT", help="system prompt for new chats")
    p.set_defaults(func=run)


def run(args) -> int:
    import localllm

    if args.ctx is not None and args.ctx < 16:
        raise localllm.LocalLLMError(f"--ctx must be at least 16 tokens, got {args.ctx}")
    hardware = localllm.load_profile(args.profile) if args.profile else None
    from localllm.tui import run as run_tui

    return run_tui(args.model, context=args.ctx, hardware=hardware, system_prompt=args.system)
