"""The persona section: who the bot is and the fixed texts it says."""

from __future__ import annotations

from pydantic import Field, ValidationInfo, field_validator

from bot.settings.base import NAMES as _NAMES
from bot.settings.base import Section as _Section
from bot.settings.base import placeholders as _placeholders

# The {placeholders} each persona text may use; render() fills exactly these.
PLACEHOLDERS: dict[str, frozenset[str]] = {
    "system_prompt": _NAMES, "greeting": _NAMES, "fallback_text": _NAMES,
    "handoff_text": _NAMES, "clarify_text": _NAMES, "clarify_footer": _NAMES,
    "empty_text": _NAMES, "too_long_text": _NAMES | {"max_chars"}, "error_text": _NAMES,
    "waiting_text": _NAMES, "wait_notice_text": _NAMES | {"wait"}, "identity_text": _NAMES,
    "stay_text": _NAMES,
    "blocked_text": _NAMES, "abuse_text": _NAMES, "harmful_text": _NAMES,
    "self_harm_text": _NAMES, "rate_text": _NAMES, "cooldown_text": _NAMES | {"minutes"},
    "busy_text": _NAMES, "looking_up_text": _NAMES, "action_cancelled_text": _NAMES,
    "action_gave_up_text": _NAMES, "action_offer_text": _NAMES,
}



class PersonaSettings(_Section):
    """Who the bot is and the fixed texts it says ({bot_name} and {company_name} are filled in)."""

    company_name: str = Field("Kestrel Outfitters", min_length=1,
                              description="Company the bot speaks for.")
    bot_name: str = Field("Kes", min_length=1, description="Name the bot introduces itself with.")
    system_prompt: str = Field(
        "You are {bot_name}, the support assistant of {company_name}. Answer the customer's "
        "question with the facts from the FAQ, in one to three sentences. Do not add anything "
        "that is not in the FAQ.",
        min_length=1, description="System prompt for generation; {bot_name} and {company_name} "
        "are filled in.")
    greeting: str = Field("Hi, I'm {bot_name} from {company_name}. How can I help you today?",
                          description="First message in an interactive chat.")
    fallback_text: str = Field(
        "Sorry, I don't have an answer to that. Would you like me to pass you to a human "
        "colleague? Type 'human' and I'll connect you.", min_length=1,
        description="Reply when nothing in the FAQ matches.")
    handoff_text: str = Field(
        "I'm passing you to a human colleague now. Someone from our team will reply here as "
        "soon as possible.", min_length=1, description="Reply when handing off to a human.")
    clarify_text: str = Field("I'm not quite sure what you mean. Did you mean:", min_length=1,
                              description="Lead-in before the 'Did you mean' suggestions.")
    clarify_footer: str = Field(
        "Reply with a number, or ask your question in other words.",
        description="Line after the suggestions.")
    empty_text: str = Field("Please type your question.", min_length=1,
                            description="Reply to an empty message.")
    too_long_text: str = Field(
        "Your message is too long for me; please keep it under {max_chars} characters.",
        min_length=1, description="Reply to a message over dialogue.max_input_chars.")
    error_text: str = Field(
        "Sorry, something went wrong on our side. Please try again in a moment, or type "
        "'human' to reach a colleague.", min_length=1,
        description="Reply when a turn fails (the error is logged and stored).")
    busy_text: str = Field(
        "I'm still working on your previous message. Please send this one again in a moment.",
        min_length=1, description="Reply when the conversation's previous turn is still "
        "running after storage.turn_lock_seconds (the message is not stored).")
    waiting_text: str = Field(
        "A colleague from our team has your conversation and will reply here soon.",
        min_length=1, description="Reply while a handed-off conversation waits for a human.")
    wait_notice_text: str = Field(
        "Thank you for waiting. Our colleagues are all busy at the moment; the wait is {wait}. "
        "You don't need to stay: we will reply here in this chat.", min_length=1,
        description="Sent once to a customer still waiting for a human after "
        "operators.wait_notice_minutes; {wait}: 'about N minutes' from recent claims, else "
        "'a little longer than usual'.")
    identity_text: str = Field(
        "I'm {bot_name}, the virtual assistant of {company_name}. I can answer questions "
        "from our help pages; type 'human' to reach a colleague.", min_length=1,
        description="Reply to 'are you a human or a bot?'.")
    stay_text: str = Field(
        "All right, I'll keep helping you here. What would you like to know?", min_length=1,
        description="Reply when the customer says they do not want a human.")
    blocked_text: str = Field(
        "Sorry, I can't help with that. I'm happy to help with your orders, deliveries, returns "
        "and account.", min_length=1,
        description="Reply to a message the safety guards block (it does not say which rule).")
    abuse_text: str = Field(
        "I'm here to help, and I'd like to keep this conversation friendly. What can I do for "
        "you?", min_length=1, description="Reply to an abusive or offensive message.")
    harmful_text: str = Field(
        "Sorry, I can't help with that.", min_length=1,
        description="Reply to a request for something harmful (weapons, crime, violence).")
    self_harm_text: str = Field(
        "I'm really sorry you're feeling this way. You deserve support right now: if you are in "
        "danger, please call your local emergency number, or reach a crisis line (988 in the "
        "US, 116 123 in the UK and Ireland). You don't have to go through this alone.",
        min_length=1, description="Reply when a message speaks of self-harm or suicide.")
    rate_text: str = Field(
        "You're sending messages faster than I can answer. Please wait a moment and try again.",
        min_length=1, description="Reply when a user goes over the rate or flood limit.")
    cooldown_text: str = Field(
        "Let's take a short break. I'll be able to reply again in about {minutes} minutes.",
        min_length=1, description="Reply during a cool-down after repeated blocked messages "
        "({minutes} is filled in).")
    looking_up_text: str = Field(
        "One moment, I'm looking that up...", min_length=1,
        description="Shown while an action's call runs (the web page shows it until the "
        "reply; it is not part of the stored reply).")
    action_cancelled_text: str = Field(
        "All right, I've stopped there. What else can I help you with?", min_length=1,
        description="Reply when the customer cancels an action the bot was asking for.")
    action_gave_up_text: str = Field(
        "Sorry, I still couldn't read that. Would you like me to pass you to a human "
        "colleague? Type 'human' and I'll connect you.", min_length=1,
        description="Reply after repeated answers that hold no valid value for an action.")
    action_offer_text: str = Field(
        "Would you like me to pass you to a human colleague? Type 'human' and I'll connect "
        "you.", min_length=1,
        description="Said after an action's on_error when its call failed.")

    @field_validator(*PLACEHOLDERS)
    @classmethod
    def _known_placeholders(cls, text: str, info: ValidationInfo) -> str:
        allowed = PLACEHOLDERS[str(info.field_name)]
        for name in _placeholders(text):
            if name not in allowed:
                names = ", ".join(f"{{{a}}}" for a in sorted(allowed))
                raise ValueError(f"unknown placeholder {{{name}}} (allowed: {names}; "
                                 "write {{ and }} for a literal brace)")
        return text

    def render(self, text: str, **extra: object) -> str:
        """Fill {bot_name}, {company_name} and any extra fields into a persona text."""
        return text.format(bot_name=self.bot_name, company_name=self.company_name, **extra)

