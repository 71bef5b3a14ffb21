"""Harmful requests (weapons, self-harm, crime, violence): a lexicon by category, and a head.

A hit gets a short safe reply, never the fallback that offers a human; self-harm gets a caring
line pointing to emergency help instead of a refusal.
"""

from __future__ import annotations

import re

from bot.safety.base import GuardContext, Patterns, Verdict, first_match
from bot.safety.detector import Head

_HOW = r"(?:how (?:do|can|could|would|should) (?:i|you|we|one|someone)|how to|ways? to|" \
    r"steps? to|teach me (?:to|how to)|help me|tell me how to|instructions (?:for|to|on)|" \
    r"guide (?:to|for|on)|tutorial (?:on|for)|i (?:want|need|plan|am going|'m going) to|" \
    r"best way to|easiest way to|recipe for|can you (?:help me|tell me how to|explain how to))"
CATEGORIES: Patterns = [(name, re.compile(pattern)) for name, pattern in [
    ("self-harm", r"\b(?:kill|hurt|harm|cut|hang|poison|shoot|drown|starve) (?:my ?self|myself)\b|"
     r"\bsuicid(?:e|al)\b|\bend(?:ing)? (?:my (?:own )?life|it all)\b|\bwant(?:s)? to die\b|"
     r"\bdon'?t want to (?:live|be alive|exist) (?:any ?more)?|\bself[- ]?harm|"
     r"\bbetter off dead\b|\btake my (?:own )?life\b|\bno (?:reason|point) (?:to|in) "
     r"(?:living|live|going on)\b|\boverdos(?:e|ing) on\b|\blethal dose\b"),
    ("weapons", rf"\b(?:{_HOW}|make|build|assemble|construct|manufacture|create|produce|"
     r"synthesi[sz]e|3d[- ]print)\b.{0,40}\b(?:bombs?|explosives?|pipe ?bombs?|molotov|grenades?|"
     r"napalm|detonators?|ieds?|nerve agents?|sarin|ricin|anthrax|bio ?weapons?|biological "
     r"weapons?|chemical weapons?|dirty bombs?|nuclear (?:bomb|weapon)s?|ghost guns?|"
     r"silencers?|suppressors?|untraceable (?:gun|firearm|weapon)s?|automatic weapons?|"
     r"thermite|tatp|c-?4|semtex)\b|\bbomb[- ]making\b|\bhow (?:to|do i|can i) (?:get|buy|"
     r"obtain) (?:a )?(?:gun|firearm|weapon) (?:illegally|without)"),
    ("violence", r"\b(?:kill|murder|poison|stab|shoot|strangle|assassinate|torture|kidnap|hit|"
     r"punch|assault|rob|abduct|beat up|hurt|attack)\b (?:someone|somebody|a person|people|"
     r"my (?:wife|husband|boss|neighbou?r|ex|teacher|parents?|mother|father|mom|dad|brother|sister|"
     r"girlfriend|boyfriend|partner|coworker|colleague|child|kid)|him|her|them|a child|"
     r"children|the president)\b|\bmass shooting\b|\bget away with (?:murder|killing)\b|"
     r"\bhide (?:a|the) (?:body|corpse)\b|\bdispose of (?:a|the) body\b"),
    ("crime", rf"\b(?:{_HOW})\b.{{0,50}}\b(?:launder(?:ing)? money|money laundering|"
     r"counterfeit|fake (?:ids?|passports?|money|bills|documents)|steal(?:ing)? (?:a car|cars|"
     r"someone|identit|credit cards?|money|from)|shoplift|pick ?a lock|hot-?wire|"
     r"break into (?:a|an|someone|my neighbou?r|his|her|their|cars?|houses?)|"
     r"hack(?:ing)? into|phishing|ransomware|malware|keylogger|botnet|ddos|credit card fraud|"
     r"card skimm|skimmer|smuggl|traffick|evade (?:taxes|the police|police)|tax evasion|"
     r"(?:make|cook|grow|synthesi[sz]e|buy|sell|produce) (?:meth|crack|cocaine|heroin|"
     r"fentanyl|lsd|mdma|drugs)|forge (?:a |my )?(?:signature|document|check|cheque)|"
     r"blackmail|extort|stalk|spy on (?:my|someone)|scam (?:people|someone|elderly)|"
     r"cyberbully|dox|bully)|\bwithout (?:getting|being) caught\b|\bwithout leaving (?:a )?"
     r"trace\b|\bchild (?:porn|sexual abuse material)|\bcsam\b"),
    ("crime", r"\b(?:write|create|make|draft|generate|design|code|build|develop|send)\b(?: me)?"
     r"(?: an?| some| the)?(?: \w+)? (?:phishing|ransomware|malware|keylogger|spyware|"
     r"computer virus|trojan|credit card skimmer)\b"),
    ("crime", rf"\b(?:{_HOW}|where (?:can|could|do) i|what(?:'s| is) the (?:best|easiest) way to)"
     r"\b.{0,50}\b(?:steal|rob|mug|shoplift|kidnap|abduct|contaminate|sabotage|blackmail|"
     r"extort|threaten|bribe|defame|cheat on (?:my |the )?tax|commit (?:fraud|arson|a crime)|"
     r"insider trading|burn (?:down|\w+ \w+ down)|arson|bug (?:someone|somebody|a phone|"
     r"his|her|their|my \w+'s)|spy on|poach|pirate|get away with|"
     r"(?:get|break|hack|hook) into (?:someone|somebody|my \w+'s|his|her|their|a stranger)|"
     r"(?:someone|somebody)'s (?:password|account|phone|wallet|identity)|"
     r"fake (?:check|cheque|id|passport|money|documents|reviews|prescription)|"
     r"hit ?man|hire a killer|untraceable poison|frame someone|blame someone else for)"),
    ("hate", r"\b(?:promote|spread|glorif(?:y|ies)|incite)\b.{0,40}\b(?:hate|hatred|white "
     r"supremacy|genocide|terrorism|violence against)\b|\bjoin (?:isis|al-qaeda|a terrorist)"),
]]


class HarmfulGuard:
    """Blocks requests for weapons, self-harm, crime, violence or hate content."""

    name = "harmful"

    def __init__(self, head: Head | None, threshold: float) -> None:
        self.head = head
        self.threshold = threshold

    def check(self, text: str, context: GuardContext) -> Verdict:
        """The lexicon first (it names the category); then the learned head."""
        folded = context.folded or text.lower()
        hit = first_match([folded], CATEGORIES)
        if hit is not None:
            return Verdict(self.name, False, f"{hit[0]}: {hit[1]!r}", 1.0, category=hit[0])
        vector = context.vector(folded) if self.head is not None else None
        if self.head is None or vector is None:
            return Verdict(self.name, True)
        score = self.head.probability(vector)
        if score >= self.threshold:
            return Verdict(self.name, False, f"detector {score:.2f}", score, category="harmful")
        return Verdict(self.name, True, "", score)
