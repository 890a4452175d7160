"""Offline, deterministic word lists.

Needle keys are adjective-noun pairs ("quiet-harbor") drawn from two small
curated lists written out below, so the key space (ADJECTIVES x NOUNS) is
fixed by this file alone. The common-words task needs a larger vocabulary of
plain English words; it is the sorted union of those lists, the words of the
Python documentation shipped with the interpreter (`pydoc_data.topics`) and
the words that recur in the chitchat dialogues. Every list is sorted, so its
order never depends on dictionary or set iteration order.
"""

from __future__ import annotations

import collections
import functools
import random
import re
from typing import Iterable

ADJECTIVES: tuple[str, ...] = tuple(sorted(set("""
  able absent active afraid agile amber ample ancient angry anxious arctic
  autumn awake awful bashful better big bitter black bland blank blue bold
  brave brief bright brisk broad broken brown busy calm careful cheap cheerful
  chilly clean clear clever cloudy clumsy coastal cold colossal common cool
  cosmic cozy crisp crooked crowded cruel curious curly damp dark dear deep
  dense digital dizzy dry dusty eager early earnest easy elastic electric
  elegant empty endless equal even exact faint fair faithful famous fancy
  fast fearless fierce final fine firm flat fluffy foggy fond fragile free
  fresh friendly frosty funny gentle giant gifted glad gleaming golden good
  graceful grand gray great green grumpy hairy handsome happy hard harsh
  hasty healthy heavy helpful hidden high hollow honest hot huge humble hungry
  icy idle important jolly juicy keen kind large late lazy light little
  lively lonely long loud lovely loyal lucky lunar magic major mellow merry
  mighty mild minor misty modern modest muddy narrow nasty native neat nervous
  new nice nimble noble noisy normal odd old open orange ordinary pale patient
  plain pleasant plucky polite poor proud purple quick quiet rapid rare raw
  ready real red rich rigid ripe rough round royal rural rusty sad safe salty
  scarlet secret shaggy shallow sharp shiny short shy silent silky silly
  silver simple slim slow small smooth soft solar solid sour spare speedy
  spicy splendid square stable steady steep stern sticky stormy strange
  strict strong sturdy subtle sudden sunny super sweet swift tall tame tender
  thick thin tidy tiny tired tough tranquil tropical true twin ugly upset
  urban useful vacant vague valid vast velvet violet vivid warm wary weak
  wealthy weary wet white whole wicked wide wild windy wise witty wooden
  worried yellow young zealous
""".split())))

NOUNS: tuple[str, ...] = tuple(sorted(set("""
  acorn actor airport album alley anchor angle ankle answer apple apron
  arch arena arrow artist attic author avenue badge bakery balcony ball
  bamboo banana band banner barn barrel basket beach beacon bean bear beard
  bell bench berry bicycle bird blanket blossom boat bone book boot bottle
  bowl box branch bread breeze brick bridge brook broom bucket bugle bundle
  butter button cabin cable cactus cake camel camera canal candle canoe
  canyon captain card carpet carrot castle cat cave cellar chair chalk
  channel chapel cherry chest chimney circle city cliff clock cloud clover
  coat coin comet compass cookie copper coral corner cottage cotton country
  cousin crane crater crayon creek cricket crown cup curtain cushion daisy
  dancer desert desk diamond dinner doctor dolphin door dragon drawer dream
  drum eagle engine envelope falcon farm feather fence fern ferry field
  finger fire flag flame flower flute forest fork fountain fox frog garden
  garlic gate gem giraffe glacier glove goat grape guitar hammer harbor
  harp hat hawk helmet hill honey horizon horse hotel island jacket jar
  jelly jewel jungle kettle key kitchen kite knight ladder lake lamp lantern
  lemon letter library lighthouse lily lion lizard lobster locket magnet
  mango maple map marble market meadow melody mirror mitten monkey moon
  mountain muffin museum needle nest night notebook ocean olive onion orbit
  orchard otter owl paddle page palace panda paper parrot path peach pearl
  pebble pencil pepper piano pillow pilot pine planet plate plum pocket
  pond poppy potato puzzle pyramid quilt rabbit radio rainbow raven ribbon
  river road robin rocket roof rose saddle sail salmon sandal saucer scarf
  school scroll seal shadow shell ship shoe shovel signal silk sister sketch
  sled slipper snail spider sponge spoon spring square squirrel stable star
  statue stone storm stove stream street sugar summit sunset swan sweater
  table teapot temple tent thimble thunder ticket tiger timber toast tomato
  tower tractor trail train treasure tree trumpet tulip tunnel turtle
  umbrella valley vase velvet village violin volcano wagon wall walnut wave
  whale wheel whistle willow window wing wizard wolf yacht zebra
""".split())))

_WORD_RE = re.compile(r"\b[A-Za-z]{3,12}\b")
_STUTTER_RE = re.compile(r"(.)\1\1|(..)\2\2")
_VOWEL_RE = re.compile(r"[aeiouy]")
_MIN_DIALOGUE_COUNT = 10


def num_keys() -> int:
  """Size of the adjective-noun key space."""
  return len(ADJECTIVES) * len(NOUNS)


def key_word(index: int) -> str:
  """The adjective-noun key with the given index in [0, num_keys())."""
  adjective, noun = divmod(index, len(NOUNS))
  return f"{ADJECTIVES[adjective]}-{NOUNS[noun]}"


def random_key_word(rng: random.Random) -> str:
  """A uniformly random adjective-noun key."""
  return key_word(rng.randrange(num_keys()))


def _is_plain(word: str) -> bool:
  """Has a vowel, and no letter or letter pair three times in a row
  ("aaand", "hahaha" and "hmm" go)."""
  return bool(_VOWEL_RE.search(word)) and not _STUTTER_RE.search(word)


def _words_of(texts: Iterable[str]) -> collections.Counter:
  """Counts of the plain lower-cased words of `texts`."""
  counts = collections.Counter(_WORD_RE.findall("\n".join(texts).lower()))
  return collections.Counter({w: n for w, n in counts.items() if _is_plain(w)})


def documentation_words() -> tuple[str, ...]:
  """Lower-case words (3-12 letters) of the Python documentation topics."""
  from pydoc_data import topics  # pylint: disable=import-outside-toplevel
  return tuple(sorted(_words_of(topics.topics[name]
                                for name in sorted(topics.topics))))


def dialogue_words(min_count: int = _MIN_DIALOGUE_COUNT) -> tuple[str, ...]:
  """Lower-case words (3-12 letters) used at least `min_count` times in the
  chitchat dialogues (rarer ones are mostly typos)."""
  import chitchat_dataset  # pylint: disable=import-outside-toplevel
  data = chitchat_dataset.Dataset()
  texts = (message["text"] for conversation in data.values()
           for turn in conversation["messages"] for message in turn)
  counts = _words_of(texts)
  return tuple(sorted(word for word, n in counts.items() if n >= min_count))


@functools.lru_cache(maxsize=1)
def english_vocabulary() -> tuple[str, ...]:
  """Sorted vocabulary of plain English words for the word-frequency tasks.

  Cached: reading the dialogues takes a fraction of a second.
  """
  words = set(ADJECTIVES) | set(NOUNS)
  words.update(documentation_words())
  words.update(dialogue_words())
  return tuple(sorted(words))
