"""Prompt injection and jailbreak: patterns for the known families, a learned head for the rest."""

from __future__ import annotations

import re

from bot.safety.base import GuardContext, Patterns, Verdict, first_match
from bot.safety.detector import Head

_INSTRUCTIONS = (r"(?:instructions?|rules|prompts?|guidelines|directives|directions|"
                 r"programming|restrictions|constraints|context|system message|safeguards)")
_EARLIER = r"(?:all|every|your|previous|prior|above|earlier|preceding|initial|original|" \
    r"existing|former|safety|ethical|developer|system)"
PATTERNS: Patterns = [(name, re.compile(pattern)) for name, pattern in [
    ("override", rf"\b(?:ignore|disregard|forget|override|bypass|skip|drop|abandon|neglect)\b"
     rf"(?:\W+\w+){{0,2}}?\W+{_EARLIER}\b(?:\W+\w+){{0,3}}?\W+{_INSTRUCTIONS}"),
    ("override", r"\b(?:ignore|disregard|forget)\s+(?:everything|all)\s+(?:above|before|"
     r"previously|you were told|that came before)"),
    ("new-rules", r"\b(?:new|updated|real|true)\s+(?:instructions|rules|system prompt)\s*(?::|"
     r"are\b|follow)"),
    ("persona", r"\b(?:you are|you're|act as|acting as|pretend(?: to be| you are)?|roleplay as|"
     r"role-play as|behave like|become|simulate)\s+(?:now\s+)?(?:my\s+)?(?:an?\s+|the\s+)?"
     r"(?:dan|stan|dude|aim|evil|unfiltered|uncensored|unrestricted|jailbroken|amoral|unethical|immoral|"
     r"rogue|unbound|unlimited|developer mode|god mode|free ai|ai without)\b"),
    ("persona", r"\bdo anything now\b|\bdeveloper mode\b|\bjail ?break(?:ed)? (?:mode|prompt|"
     r"version|ai|chatgpt|gpt|bot|assistant|model)\b|\bjailbroken (?:ai|assistant|bot|model|"
     r"mode|version|chatgpt)\b|\bjail ?break (?:you|yourself|this (?:ai|bot|chat))\b|"
     r"\bgod mode\b|\bdan mode\b|\bdan\s+\d+(?:\.\d+)?\b|\bno (?:ethical|moral) "
     r"(?:guidelines|constraints|boundaries|restrictions|limits)\b"),
    ("no-limits", r"\b(?:without|no|free (?:of|from)|not bound by|beyond|outside)\s+(?:any\s+)?"
     r"(?:restrictions|censorship|filters?|filtering|limitations|ethics|morals|guidelines|"
     r"rules|content polic(?:y|ies)|safety (?:measures|guidelines))\b(?:.{0,80})"
     r"\b(?:answer|respond|reply|generate|say|do|tell|output|write)"),
    ("no-limits", r"\b(?:answer|respond|reply|generate|say|do|tell|output|write|explain|describe|"
     r"continue|give)\b.{0,80}"
     r"\b(?:without|no)\s+(?:any\s+)?(?:restrictions|censorship|filters?|warnings?|"
     r"limitations|ethical|moral)\b"),
    ("prompt-leak", r"\b(?:print|show|reveal|repeat|output|display|dump|leak|recite|share|"
     r"give me|tell me|what(?:'s| is| are| were)|spell out|echo|copy|translate)\b(?:\W+\w+){0,4}?"
     r"\W+(?:system|initial|original|hidden|secret|internal|developer|pre-?prompt|"
     r"underlying)\s+(?:prompt|instructions?|rules|directives|configuration)"),
    ("prompt-leak", r"\b(?:your|the)\s+(?:system\s+prompt|initial\s+prompt|pre-?prompt|prompt "
     r"above|instructions above|text above)\b"),
    ("prompt-leak", r"\b(?:repeat|print|output)\s+(?:the\s+)?(?:words|text|everything)\s+"
     r"(?:above|before)|\bwhat (?:were|are) you told (?:before|to do)\b"),
    ("override", r"\b(?:instructions|rules|guidelines|restrictions|directives|programming|"
     r"filters)\s+(?:no longer apply|(?:are|is)\s+(?:now\s+)?(?:void|lifted|off|suspended|"
     r"disabled|cancelled|gone))\b|\b(?:override|disable|turn off|switch off|deactivate|remove|"
     r"lift|break|bend|violate)\s+your\s+(?:own\s+)?(?:safety\s+|content\s+|security\s+)?"
     r"(?:settings|filters?|guardrails|restrictions|rules|programming|guidelines|protocols|"
     r"limits|limitations)\b"),
    ("override", r"\bstop being (?:a |an |the )?(?:support |customer service |helpful )?(?:bot|"
     r"assistant|ai)\b|\byour (?:only|new|real|true) (?:job|task|purpose|goal|role|mission) "
     r"(?:now |from now on )?is\b"),
    ("prompt-leak", r"\b(?:instructions|rules|prompt|guidelines|directives)\s+(?:that\s+)?you "
     r"(?:were|have been|'ve been|got)\s+(?:given|told|programmed|trained)|\b(?:translate|"
     r"repeat|print|show|reveal|output|display)\s+(?:me\s+)?your\s+(?:system|initial|hidden|"
     r"secret|internal|developer)\s+(?:message|prompt|instructions)"),
    ("fiction", r"\b(?:world|universe|place|society|country|setting|story|realm)\s+(?:with|where "
     r"there (?:are|is)|that has|without)\s+(?:no\s+)?(?:laws|rules|ethics|morals|restrictions|"
     r"consequences)\b"),
    ("role-tags", r"<\|?(?:im_start|im_end|system|endoftext|assistant)\|?>|\[/?inst\]|"
     r"^\s*#{2,}\s*(?:instruction|system)|\bsystem\s*:\s*you\b|\[system\]|<<sys>>"),
    ("two-answers", r"\b(?:two|2|both)\s+(?:different\s+)?(?:responses|answers|ways|"
     r"paragraphs)\b.{0,120}\b(?:filter|unfiltered|jailbreak|classic|normal|censored|rules)\b"),
    ("character", r"\bstay in character\b|\bbreak(?:ing)? character\b|\bfrom now on,? you"
     r"(?:'re| are| will be| will| must| shall)\s+(?:going to\s+)?(?:act|pretend|play|respond|"
     r"answer|reply|called|named|an? (?:\w+ )?(?:ai|assistant|bot|model|character|version))\b|"
     r"\bopposite (?:mode|day)\b|\bhypothetical(?:ly)? "
     r"(?:ai|model|assistant) (?:without|with no)\b|\bno longer (?:bound|restricted|have to "
     r"follow)\b|\bfree from (?:the )?(?:typical|usual) (?:confines|restrictions)\b"),
    ("multilingual", r"\b(?:ignora|ignore[rz]?|ignoriere|negeer|ignoruj|ignore)\b.{0,40}"
     r"\b(?:instrucciones|instructions|anweisungen|regeln|instructies|regole|istruzioni|"
     r"instrucoes|instruções|reglas|instrukcje|consignes|regras)\b"),
    ("multilingual", r"(?:игнорир|забудь|игнорируи|ignorir)\w*.{0,40}(?:инструкц|правил)|"
     r"忽略.{0,10}(?:指令|指示|说明|规则)|無視.{0,10}(?:指示|命令)|システムプロンプト|系统提示"),
]]


class InjectionGuard:
    """Blocks prompt injection and jailbreaks: a pattern hit, or the learned head above threshold.

    Long messages are also scored window by window (jailbreak templates bury the attack in
    role-play), up to `max_windows` embeddings.
    """

    name = "injection"

    def __init__(self, head: Head | None, threshold: float, max_windows: int = 3,
                 window_words: int = 120) -> None:
        self.head = head
        self.threshold = threshold
        self.max_windows = max_windows
        self.window_words = window_words

    def check(self, text: str, context: GuardContext) -> Verdict:
        """Pattern first (free); then the head on the folded text's embedding."""
        folded = context.folded or text.lower()
        hit = first_match([folded, text.lower(), folded[::-1]], PATTERNS)  # reversed: "erongi"
        if hit is not None:
            return Verdict(self.name, False, f"pattern {hit[0]}: {hit[1]!r}", 1.0,
                           category=hit[0])
        score = self.score(folded, context)
        if score >= self.threshold:
            return Verdict(self.name, False, f"detector {score:.2f}", score, category="learned")
        return Verdict(self.name, True, "", score)

    def score(self, folded: str, context: GuardContext) -> float:
        """The head's highest probability over the text's windows (0 without a head)."""
        if self.head is None:
            return 0.0
        best = 0.0
        for window in windows(folded, self.window_words, self.max_windows):
            vector = context.vector(window)
            if vector is None:
                return 0.0
            best = max(best, self.head.probability(vector))
        return best


def windows(text: str, size: int, limit: int) -> list[str]:
    """The text itself if short, else up to `limit` windows of `size` words (start, end, mid)."""
    words = text.split()
    if len(words) <= size or limit <= 1:
        return [text]
    starts = [0, len(words) - size, (len(words) - size) // 2][:limit]
    return [" ".join(words[s:s + size]) for s in sorted(set(starts))]
