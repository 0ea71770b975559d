"""What the text tower reads: each class name as words, put into prompt templates.

The templates are those CLIP's authors published for action datasets (the CLIP paper's
prompt engineering; LAION's CLIP_benchmark reuses them), written here as the products they are:

    ucf101     48: "a {photo, video, example, demonstration} of {a, the} person [VERB ]{c}."
    kinetics   28: "a {photo, video, example, demonstration} of [a person [VERB ]]{c}."

where VERB is one of using, doing, during, performing, practicing. A class's embedding is the
mean of its normalised template embeddings (CLIP's prompt ensembling).
"""

from __future__ import annotations

import re

NOUNS = ("photo", "video", "example", "demonstration")
VERBS = ("using", "doing", "during", "performing", "practicing")


def ucf101_templates() -> tuple[str, ...]:
    """CLIP's 48 UCF101 templates, in their published order (verb, then article, then noun)."""
    return tuple(
        f"a {noun} of {article} person {verb + ' ' if verb else ''}{{c}}."
        for verb in ("", *VERBS)
        for article in ("a", "the")
        for noun in NOUNS
    )


def kinetics_templates() -> tuple[str, ...]:
    """CLIP's 28 Kinetics-700 templates, in their published order (noun, then subject)."""
    subjects = ("", "a person ", *(f"a person {verb} " for verb in VERBS))
    return tuple(f"a {noun} of {subject}{{c}}." for noun in NOUNS for subject in subjects)


# --templates (TEMPLATES=) -> its templates; the first is the default
TEMPLATE_SETS: dict[str, tuple[str, ...]] = {"ucf101": ucf101_templates(), "kinetics": kinetics_templates()}

# A word of a folder name: an acronym before a capitalised word, a (capitalised) word, an acronym, a number.
WORD = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+")


def class_words(name: str) -> str:
    """A class folder's name as the words a caption would use.

    'ApplyEyeMakeup' and 'apply_eye_makeup' -> 'apply eye makeup', 'YoYo' -> 'yo yo',
    'PlayingDhol' -> 'playing dhol'; a name that already has spaces (Kinetics' 'playing
    bagpipes') is kept as written, lower-cased. CLIP's tokenizer lower-cases all text anyway.
    """
    if " " in name.strip():
        return " ".join(name.lower().split())
    words = WORD.findall(name)
    return " ".join(w.lower() for w in words) if words else name


def prompts_for(classes: list[str], templates: str) -> list[list[str]]:
    """Per class (C), its prompts: every template of the set `templates` with the class's words in it."""
    return [[t.format(c=class_words(c)) for t in TEMPLATE_SETS[templates]] for c in classes]
