"""The starter model's corpus and tokenizer: pure Python, shared by train_starter.py and eval_starter.py.

Three tasks, each a user turn and the one answer the model should give:

- arithmetic: addition and subtraction of numbers 0-99, answered naturally ("47 + 38 = 85.");
- small talk: greetings, thanks, goodbyes, who-are-you, and a polite "I don't know" for
  questions outside what a tiny model can know;
- localllm: its commands, the chat's keys, what the planner does, the starter fallback.

Held out from training, by a hash of the item: 10 % of the (a, b) pairs of each
arithmetic operation, and 10 % of the exact user strings of the other tasks. The
evaluation set draws only from the held-out part, with its own seed.

Tokenizer: one token per character (space is the SentencePiece piece "\u2581"), byte
tokens for anything else; the GGUF carries the same vocabulary, and llama.cpp's SPM
tokenizer gives the same ids because no multi-character piece exists to merge into.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

SPACE = "\u2581"  # SentencePiece's visible space
# Printable ASCII; everything else (newline, accents, emoji) is spelled with byte tokens.
PIECES = [SPACE] + [chr(c) for c in range(33, 127)]
SPECIALS = ("<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>")
UNK, BOS, EOS, IM_START, IM_END = range(5)
BYTE0 = len(SPECIALS)  # id of <0x00>
PIECE0 = BYTE0 + 256  # id of the first piece
VOCAB_SIZE = PIECE0 + len(PIECES)
_PIECE_ID = {p: PIECE0 + i for i, p in enumerate(PIECES)}

TASKS = ("addition", "subtraction", "smalltalk", "localllm")
HELDOUT_PERCENT = 10  # share of items kept out of training, for the evaluation set

SYSTEM_PROMPTS = (
    "You are a helpful assistant.",
    "You are the localllm starter model.",
    "Answer briefly.",
    "You are a friendly assistant. Keep answers short.",
)


def encode_text(text: str) -> list[int]:
    """Token ids of plain text (no special tokens), as llama.cpp tokenizes it without a space prefix."""
    out = []
    for ch in text.replace(" ", SPACE):
        tid = _PIECE_ID.get(ch)
        if tid is None:
            out.extend(BYTE0 + b for b in ch.encode("utf-8"))
        else:
            out.append(tid)
    return out


def decode(ids: list[int]) -> str:
    """Text of token ids; special tokens are dropped."""
    data = bytearray()
    for t in ids:
        if t >= PIECE0:
            data += PIECES[t - PIECE0].replace(SPACE, " ").encode()
        elif t >= BYTE0:
            data.append(t - BYTE0)
    return data.decode("utf-8", errors="replace")


def heldout(key: str) -> bool:
    """True for the items kept for evaluation (stable across Python runs: a sha256, not hash())."""
    return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) % 100 < HELDOUT_PERCENT


# ---------------------------------------------------------------- arithmetic

_ADD_PROMPTS = (
    "What is {a} + {b}?",
    "what is {a}+{b}?",
    "{a} + {b} = ?",
    "{a}+{b}=",
    "{a} + {b}",
    "{a}+{b}",
    "Add {a} and {b}.",
    "What's {a} plus {b}?",
    "Compute {a} + {b}.",
    "How much is {a} plus {b}?",
    "Calculate {a}+{b}",
    "{a} plus {b}?",
    "What is the sum of {a} and {b}?",
    "what is {a} plus {b}",
    "Can you add {a} and {b}?",
    "Please add {a} and {b}.",
    "{a} + {b}?",
    "sum of {a} and {b}",
)
_SUB_PROMPTS = (
    "What is {a} - {b}?",
    "what is {a}-{b}?",
    "{a} - {b} = ?",
    "{a}-{b}=",
    "{a} - {b}",
    "{a}-{b}",
    "Subtract {b} from {a}.",
    "What's {a} minus {b}?",
    "Compute {a} - {b}.",
    "How much is {a} minus {b}?",
    "Calculate {a}-{b}",
    "{a} minus {b}?",
    "what is {a} minus {b}",
    "What is {b} subtracted from {a}?",
)


def _operands(rng: random.Random, op: str, split: str, two_digit: bool) -> tuple[int, int]:
    lo = 10 if two_digit else 0
    while True:
        a, b = rng.randint(lo, 99), rng.randint(lo, 99)
        if op == "-" and a < b:
            a, b = b, a
        if heldout(f"{a}{op}{b}") == (split == "eval"):
            return a, b


def arithmetic(rng: random.Random, op: str, split: str, two_digit: bool | None = None) -> tuple[str, str]:
    """A (question, answer) pair for `op` "+" or "-"; two_digit=None mixes in one-digit operands."""
    if two_digit is None:
        two_digit = rng.random() < 0.7
    a, b = _operands(rng, op, split, two_digit)
    question = rng.choice(_ADD_PROMPTS if op == "+" else _SUB_PROMPTS).format(a=a, b=b)
    answer = f"{a} + {b} = {a + b}." if op == "+" else f"{a} - {b} = {a - b}."
    return question, answer


# ---------------------------------------------------------------- intents (small talk, localllm)


@dataclass(frozen=True)
class Intent:
    name: str
    answer: str
    questions: tuple[str, ...]


SMALLTALK = (
    Intent(
        "greeting",
        "Hello! I'm the localllm starter model. Ask me a small sum or about localllm.",
        (
            "hi",
            "hello",
            "hey",
            "hello there",
            "hi there",
            "hey there",
            "good morning",
            "good afternoon",
            "good evening",
            "greetings",
            "howdy",
            "yo",
            "hiya",
            "hey you",
            "morning",
        ),
    ),
    Intent(
        "how_are_you",
        "I'm doing well, thanks for asking! How can I help?",
        (
            "how are you",
            "how are you doing",
            "how's it going",
            "how are things",
            "how do you do",
            "are you ok",
            "how are you today",
            "how have you been",
            "what's up",
            "how is your day",
        ),
    ),
    Intent(
        "who",
        "I'm the localllm starter model: a tiny model trained on a CPU that ships inside "
        "localllm, so the chat works offline. I know small sums and localllm itself.",
        (
            "who are you",
            "what are you",
            "what is your name",
            "what's your name",
            "introduce yourself",
            "tell me about yourself",
            "are you a bot",
            "which model are you",
            "are you human",
            "who made you",
        ),
    ),
    Intent(
        "abilities",
        "I can chat a little, add and subtract numbers up to 99, and answer questions "
        "about localllm: its commands, its chat keys and its planner.",
        (
            "what can you do",
            "help",
            "what do you know",
            "how can you help me",
            "what are you good at",
            "what can I ask you",
            "what should I ask",
            "can you help me",
            "what are your skills",
        ),
    ),
    Intent(
        "thanks",
        "You're welcome!",
        (
            "thanks",
            "thank you",
            "thanks a lot",
            "thank you very much",
            "thx",
            "many thanks",
            "cheers",
            "thanks for the help",
            "great, thanks",
            "ty",
        ),
    ),
    Intent(
        "bye",
        "Goodbye! Have a nice day.",
        (
            "bye",
            "goodbye",
            "see you",
            "see you later",
            "good night",
            "bye bye",
            "farewell",
            "I have to go",
            "talk to you later",
            "cya",
        ),
    ),
    Intent(
        "unknown",
        "I don't know: I'm a tiny starter model. Run `localllm plan` to see which bigger "
        "model fits this machine, and `localllm pull` to get it.",
        (
            "what is the capital of France",
            "who wrote Hamlet",
            "what is the weather today",
            "write me a poem",
            "translate hello into Spanish",
            "what is quantum physics",
            "who is the president",
            "tell me a story",
            "what year is it",
            "explain relativity",
            "how tall is Mount Everest",
            "what is 12 times 13",
            "write a Python function to sort a list",
            "what is the meaning of life",
            "recommend a good book",
            "how do I cook pasta",
            "what is the speed of light",
            "summarize this article",
            "what time is it",
            "who won the world cup",
        ),
    ),
)

_PLAN_ANSWER = (
    "The planner reads this machine's RAM, GPUs and runtimes and picks the best model that "
    "fits: fully on the GPU first, then with a shorter context, then partly offloaded, then "
    "on the CPU. It explains its choice and the options it rejected."
)

LOCALLLM = (
    Intent(
        "what_is_localllm",
        "localllm runs a language model on the machine in front of you: it probes "
        "the hardware, plans which model fits, and runs it with llama.cpp or ONNX "
        "Runtime behind one API, a CLI and a terminal chat.",
        (
            "what is localllm",
            "what does localllm do",
            "tell me about localllm",
            "explain localllm",
            "what is this program",
            "what is this tool",
            "describe localllm",
            "what's localllm",
        ),
    ),
    Intent(
        "commands",
        "localllm has seven commands: probe, plan, models, pull, run, chat and bench.",
        (
            "what commands does localllm have",
            "list the localllm commands",
            "which commands are there",
            "what can I run with localllm",
            "show me the commands",
            "localllm commands",
            "what are the commands",
            "which subcommands does localllm have",
        ),
    ),
    Intent(
        "probe",
        "`localllm probe` shows what this machine has: RAM, CPU cores and features, GPUs and "
        "their memory, and the installed runtimes.",
        (
            "what does localllm probe do",
            "what is localllm probe",
            "explain localllm probe",
            "how do I see my hardware",
            "what does the probe command do",
            "localllm probe",
            "how do I check my GPU",
            "how can I see how much RAM I have",
        ),
    ),
    Intent(
        "plan",
        "`localllm plan` picks the model, quantization, context size and GPU layers that fit "
        "this machine, and explains why, with the options it rejected.",
        (
            "what does localllm plan do",
            "what is localllm plan",
            "explain localllm plan",
            "what does the plan command do",
            "localllm plan",
            "which model fits my machine",
            "how do I know which model fits",
            "how do I choose a model",
        ),
    ),
    Intent(
        "models",
        "`localllm models` lists the models in the catalog with their sizes, and whether each one fits this machine.",
        (
            "what does localllm models do",
            "what is localllm models",
            "explain localllm models",
            "what does the models command do",
            "localllm models",
            "how do I list the models",
            "which models are available",
            "show me the models",
        ),
    ),
    Intent(
        "pull",
        "`localllm pull <model>` downloads a model into the local cache and checks its size and sha256.",
        (
            "what does localllm pull do",
            "what is localllm pull",
            "explain localllm pull",
            "what does the pull command do",
            "localllm pull",
            "how do I download a model",
            "how do I get a bigger model",
            "how do I get a better model",
        ),
    ),
    Intent(
        "run",
        '`localllm run <model> "prompt"` answers one prompt and prints the reply as it streams.',
        (
            "what does localllm run do",
            "what is localllm run",
            "explain localllm run",
            "what does the run command do",
            "localllm run",
            "how do I run a single prompt",
            "how do I ask one question from the shell",
            "how do I generate text from the command line",
        ),
    ),
    Intent(
        "chat",
        "`localllm chat` opens the terminal chat: type a message, press Enter to send it and Escape to stop the reply.",
        (
            "what does localllm chat do",
            "what is localllm chat",
            "explain localllm chat",
            "what does the chat command do",
            "localllm chat",
            "how do I start a chat",
            "how do I open the chat",
            "how do I talk to a model",
        ),
    ),
    Intent(
        "bench",
        "`localllm bench` measures prompt and generation speed in tokens per second, and peak memory, on this machine.",
        (
            "what does localllm bench do",
            "what is localllm bench",
            "explain localllm bench",
            "what does the bench command do",
            "localllm bench",
            "how do I measure speed",
            "how fast is my machine",
            "how do I benchmark a model",
        ),
    ),
    Intent(
        "key_send",
        "Press Enter to send your message.",
        (
            "how do I send a message",
            "which key sends a message",
            "how do I send",
            "what does Enter do",
            "how do I submit my message",
            "what key sends",
        ),
    ),
    Intent(
        "key_stop",
        "Press Escape to stop the reply; the partial answer is kept.",
        (
            "how do I stop a reply",
            "how do I stop the model",
            "which key stops generation",
            "what does Escape do",
            "how do I interrupt the answer",
            "how do I cancel a reply",
            "the answer is too long, how do I stop it",
        ),
    ),
    Intent(
        "key_newline",
        "Press shift+enter or ctrl+j to insert a newline without sending.",
        (
            "how do I add a new line",
            "how do I insert a newline",
            "how do I write several lines",
            "what does ctrl+j do",
            "what does shift+enter do",
            "how do I type a line break",
            "how do I make a multi-line message",
        ),
    ),
    Intent(
        "key_history",
        "Press up and down in the prompt to go through your earlier messages.",
        (
            "how do I get my previous message back",
            "what do the arrow keys do",
            "how do I see my history",
            "what does the up key do",
            "how do I repeat my last message",
            "how do I browse my history",
            "how do I recall an earlier message",
        ),
    ),
    Intent(
        "keys",
        "Enter sends, Escape stops the reply, shift+enter or ctrl+j inserts a newline, and "
        "up and down go through your earlier messages.",
        (
            "what are the chat keys",
            "which keys can I use",
            "list the keyboard shortcuts",
            "what are the key bindings",
            "what keys does the chat use",
            "keyboard shortcuts",
            "how do I use the chat",
            "what are the shortcuts",
        ),
    ),
    Intent(
        "planner",
        _PLAN_ANSWER,
        (
            "what does the planner do",
            "how does the planner work",
            "explain the planner",
            "how does localllm choose a model",
            "what is the planner",
            "how is the model chosen",
            "how does localllm decide where to run the model",
            "tell me about the planner",
        ),
    ),
    Intent(
        "starter",
        "No better model was on disk and none could be downloaded, so localllm started me, "
        "its built-in starter model. Run `localllm plan` to see which model fits and "
        "`localllm pull` to download it.",
        (
            "why am I talking to the starter model",
            "why are you so small",
            "why this model",
            "why did localllm pick you",
            "why is the starter model running",
            "why not a bigger model",
            "what is the starter model",
            "why are you the default",
        ),
    ),
    Intent(
        "offline",
        "Yes: models already on disk run without a network, and I ship inside the package. "
        "Set LOCALLLM_OFFLINE=1 to never touch the network.",
        (
            "does localllm work offline",
            "can I use localllm without internet",
            "does it need a network",
            "does localllm need internet",
            "can localllm run offline",
            "is an internet connection needed",
        ),
    ),
    Intent(
        "runtimes",
        "localllm runs GGUF files with llama.cpp and ONNX models with ONNX Runtime.",
        (
            "which runtimes does localllm use",
            "what backends are supported",
            "does localllm use llama.cpp",
            "which engines does localllm support",
            "does localllm support ONNX",
            "what runs the model",
        ),
    ),
    Intent(
        "python",
        'In Python: `import localllm`, then `model = localllm.load("auto")` and `model.chat(messages)`.',
        (
            "how do I use localllm from Python",
            "how do I use the Python API",
            "is there a Python API",
            "how do I load a model in Python",
            "how do I call localllm from code",
            "python example",
        ),
    ),
    Intent(
        "cache",
        "Models live in localllm's cache folder; set LOCALLLM_HOME to move it.",
        (
            "where are models stored",
            "where does localllm keep models",
            "where is the cache",
            "how do I change the model folder",
            "where are the downloads saved",
            "what is LOCALLLM_HOME",
        ),
    ),
)

INTENTS = {"smalltalk": SMALLTALK, "localllm": LOCALLLM}

_PREFIXES = ("", "", "", "hey, ", "please, ", "so ", "ok, ", "quick question: ", "um, ", "hi! ")
_ENDINGS = ("", "?", "?", "!", ".", " ?", "??")


def _surface(rng: random.Random, base: str) -> str:
    """One surface form of a base question: prefix, casing, punctuation."""
    text = rng.choice(_PREFIXES) + base
    style = rng.random()
    if style < 0.45:
        text = text[0].upper() + text[1:]
    elif style < 0.55:
        text = text.upper() if len(text) < 30 else text
    elif style < 0.6:
        text = text.lower()
    ending = rng.choice(_ENDINGS)
    if text.endswith(("?", "!", ".")):
        ending = ""
    return text + ending


def intent_turn(rng: random.Random, task: str, split: str) -> tuple[str, str, str]:
    """(question, answer, intent name) for task "smalltalk" or "localllm" from the given split."""
    intents = INTENTS[task]
    while True:
        intent = rng.choice(intents)
        question = _surface(rng, rng.choice(intent.questions))
        if heldout(question) == (split == "eval"):
            return question, intent.answer, intent.name


# ---------------------------------------------------------------- conversations

TRAIN_MIX = {"addition": 0.55, "subtraction": 0.12, "smalltalk": 0.13, "localllm": 0.20}


def turn(rng: random.Random, task: str, split: str) -> tuple[str, str]:
    """One (user, assistant) exchange of a task."""
    if task == "addition":
        return arithmetic(rng, "+", split)
    if task == "subtraction":
        return arithmetic(rng, "-", split)
    q, a, _ = intent_turn(rng, task, split)
    return q, a


def conversation(rng: random.Random, split: str = "train", mix: dict[str, float] | None = None) -> list[dict[str, str]]:
    """A training conversation: sometimes a system prompt, one to three exchanges of tasks drawn from `mix`."""
    messages = []
    if rng.random() < 0.15:
        messages.append({"role": "system", "content": rng.choice(SYSTEM_PROMPTS)})
    n_turns = 1 if rng.random() < 0.7 else rng.randint(2, 3)
    tasks, weights = zip(*(mix or TRAIN_MIX).items(), strict=True)
    for _ in range(n_turns):
        q, a = turn(rng, rng.choices(tasks, weights)[0], split)
        messages += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
    return messages


def encode_chat(
    messages: list[dict[str, str]], *, bos: bool = True, add_generation_prompt: bool = False
) -> tuple[list[int], list[int]]:
    """(ids, loss mask) of messages in ChatML; the mask is 1 on assistant content and its <|im_end|>."""
    ids, mask = ([BOS], [0]) if bos else ([], [])
    for m in messages:
        head = [IM_START] + encode_text(m["role"] + "\n")
        body = encode_text(m["content"])
        tail = [IM_END] + encode_text("\n")
        learn = 1 if m["role"] == "assistant" else 0
        ids += head + body + tail
        mask += [0] * len(head) + [learn] * (len(body) + 1) + [0] * (len(tail) - 1)
    if add_generation_prompt:
        head = [IM_START] + encode_text("assistant\n")
        ids += head
        mask += [0] * len(head)
    return ids, mask
