"""A procedural multi-hop world: entities, encyclopedia paragraphs, and questions that need two or more hops.

Every task is a pure function of ``(config, seed, index)`` (:func:`generate_hotpotqa_task`,
:func:`generate_strategyqa_task`). A task builds a small invented world: people, films, books,
bands, cities (in invented countries), companies and universities, linked by typed relations
(directed, starred in, wrote, based on, born in, studied at, founded, headquartered in, formed in)
with dates. It writes an encyclopedia-style paragraph per documented entity, asks one question
whose answer needs facts from several paragraphs, and adds distractor paragraphs about entities
that share names and types with the gold ones (another "Harlow", a film called "The Hollow
Harbor" beside "The Silent Harbor"), as HotpotQA's distractor setting does (Yang et al. 2018,
Sec. 2).

Names, places and countries are invented, so a model cannot answer from memorised world knowledge:
the answer has to come from the paragraphs.

Records use the official HotpotQA format, so the same env code, loaders and teachers serve
procedural and real data:

* ``_id``, ``question``, ``answer``, ``type`` (``"bridge"``, ``"comparison"`` or ``"strategy"``),
  ``supporting_facts`` (``[title, sentence index]`` pairs, in the order a solver needs them),
  ``context`` (``[title, [sentences]]`` pairs, gold and distractor paragraphs shuffled).
* ``distractor_answers``: wrong answers a confused solver would plausibly give (the co-star
  instead of the director, the other option of a comparison); the noisy teacher uses them.
* StrategyQA tasks add the gold strategy in StrategyQA's own vocabulary: ``decomposition`` (the
  sub-questions), ``facts`` (the sentences that answer them) and ``evidence`` (per sub-question,
  the ``[title, sentence index]`` that answers it, or ``"operation"`` for a reasoning step), and
  their ``answer`` is ``"Yes"`` or ``"No"``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from mulligan.envs.core import seeded_rng

FIRST_NAMES: tuple[str, ...] = (
    "Adela",
    "Bram",
    "Carys",
    "Dorian",
    "Elsbeth",
    "Fenwick",
    "Greta",
    "Hollis",
    "Ines",
    "Jorah",
    "Katya",
    "Lucan",
    "Maren",
    "Nilo",
    "Odile",
    "Pascal",
    "Quilla",
    "Rafe",
    "Saskia",
    "Tobiah",
    "Ulla",
    "Viggo",
    "Wren",
    "Xanthe",
    "Yannick",
    "Zora",
    "Anselm",
    "Brigid",
    "Cosmo",
    "Delphine",
    "Emeric",
    "Fiora",
    "Gideon",
    "Halle",
    "Ivo",
    "Juno",
    "Kasimir",
    "Liesel",
    "Magnus",
    "Nerys",
)
LAST_NAMES: tuple[str, ...] = (
    "Harlow",
    "Vance",
    "Okafor",
    "Lindqvist",
    "Marchetti",
    "Quade",
    "Brannock",
    "Sato",
    "Delacroix",
    "Fairweather",
    "Galloway",
    "Hesketh",
    "Ivanova",
    "Jardine",
    "Kowalczyk",
    "Larkspur",
    "Montague",
    "Nakamura",
    "Oduya",
    "Pendergast",
    "Rasmussen",
    "Sorensen",
    "Thackeray",
    "Underhill",
    "Valdez",
    "Whitlock",
    "Yardley",
    "Zeller",
    "Abernathy",
    "Castellan",
    "Drummond",
    "Eskildsen",
    "Fontaine",
    "Greaves",
    "Holloway",
    "Ingram",
    "Kettering",
    "Lowry",
    "Mallory",
    "Northcote",
)
CITY_PREFIXES: tuple[str, ...] = (
    "Ash",
    "Bel",
    "Cor",
    "Dun",
    "Elm",
    "Fair",
    "Glen",
    "Har",
    "Iver",
    "Kel",
    "Lin",
    "Mar",
    "Nor",
    "Oak",
    "Pem",
    "Quen",
    "Ros",
    "Sel",
    "Thorn",
    "Val",
    "Wex",
    "Yar",
)
CITY_SUFFIXES: tuple[str, ...] = ("ford", "bury", "wick", "haven", "mouth", "stead", "ton", "field", "port", "dale")
COUNTRIES: tuple[str, ...] = (
    "Avaria",
    "Belmora",
    "Costane",
    "Dravenia",
    "Estmark",
    "Fennland",
    "Galdoria",
    "Hesperia",
    "Iskara",
    "Lorvia",
    "Morvane",
    "Norreth",
)
ADJECTIVES: tuple[str, ...] = (
    "Silent",
    "Hollow",
    "Crimson",
    "Distant",
    "Golden",
    "Broken",
    "Quiet",
    "Burning",
    "Frozen",
    "Hidden",
    "Last",
    "Long",
    "Pale",
    "Restless",
    "Scarlet",
    "Shining",
    "Stolen",
    "Wandering",
    "Winter",
    "Wild",
    "Bitter",
    "Velvet",
    "Iron",
    "Northern",
)
NOUNS: tuple[str, ...] = (
    "Harbor",
    "Orchard",
    "Lantern",
    "Meridian",
    "Garden",
    "Tide",
    "Compass",
    "Horizon",
    "Archive",
    "Citadel",
    "Ember",
    "Ferry",
    "Glacier",
    "Hymn",
    "Labyrinth",
    "Mirror",
    "Monsoon",
    "Outpost",
    "Pilgrim",
    "Quarry",
    "Sparrow",
    "Tower",
    "Voyage",
    "Willow",
)
FILM_GENRES: tuple[str, ...] = ("drama", "thriller", "comedy", "science fiction", "war", "mystery", "romance")
BOOK_GENRES: tuple[str, ...] = ("historical", "crime", "fantasy", "literary", "adventure", "gothic")
MUSIC_GENRES: tuple[str, ...] = ("rock", "folk", "jazz", "electronic", "punk", "indie pop")
INDUSTRIES: tuple[str, ...] = ("shipping", "software", "textile", "aerospace", "food", "publishing", "mining")
COMPANY_SUFFIXES: tuple[str, ...] = ("Industries", "Group", "Holdings", "Works", "Labs", "Motors", "Foods")
RIVERS: tuple[str, ...] = ("Aven", "Brisk", "Calder", "Dovey", "Esk", "Frome", "Gade", "Hull", "Isla", "Kennet")

HOTPOTQA_BRIDGE_TEMPLATES: tuple[str, ...] = (
    "director_of_film_starring",
    "birth_city_of_director",
    "university_of_author",
    "founding_year_of_university",
    "headquarters_of_company",
    "country_of_band_city",
    "author_of_adapted_novel",
)
HOTPOTQA_COMPARISON_TEMPLATES: tuple[str, ...] = (
    "founded_first",
    "born_first",
    "released_later",
    "same_birth_city",
    "same_director",
)
STRATEGYQA_TEMPLATES: tuple[str, ...] = (
    "director_university_after",
    "author_born_before_film",
    "company_older_than_university",
    "born_where_band_formed",
    "alive_at_premiere",
    "company_in_country",
)


@dataclass(frozen=True)
class WorldConfig:
    """Configuration of the procedural multi-hop world.

    Attributes:
        num_distractors: Paragraphs besides the gold ones (HotpotQA's distractor setting has 8).
        comparison_fraction: Share of HotpotQA questions that compare two entities (the rest are
            bridge questions); HotpotQA's dev set has about a fifth.
        yes_probability: Probability that a yes/no question's answer is "Yes".
        max_filler_sentences: Up to this many sentences without a relation pad each paragraph, so
            that facts sit beyond the opening sentences and ``lookup`` has work to do.
        templates: Question templates to draw from (names from ``HOTPOTQA_BRIDGE_TEMPLATES``,
            ``HOTPOTQA_COMPARISON_TEMPLATES`` or ``STRATEGYQA_TEMPLATES``); empty means all.
    """

    num_distractors: int = 8
    comparison_fraction: float = 0.3
    yes_probability: float = 0.5
    max_filler_sentences: int = 3
    templates: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if (
            isinstance(self.num_distractors, bool)
            or not isinstance(self.num_distractors, int)
            or not (0 <= self.num_distractors <= 64)
        ):
            raise ValueError(f"num_distractors must be an int in [0, 64], got {self.num_distractors!r}")
        for name in ("comparison_fraction", "yes_probability"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
        if (
            isinstance(self.max_filler_sentences, bool)
            or not isinstance(self.max_filler_sentences, int)
            or not (0 <= self.max_filler_sentences <= 10)
        ):
            raise ValueError(f"max_filler_sentences must be an int in [0, 10], got {self.max_filler_sentences!r}")
        if isinstance(self.templates, str):
            raise ValueError("templates must be a tuple of template names, not a single string")
        known = set(HOTPOTQA_BRIDGE_TEMPLATES) | set(HOTPOTQA_COMPARISON_TEMPLATES) | set(STRATEGYQA_TEMPLATES)
        unknown = [name for name in self.templates if name not in known]
        if unknown:
            raise ValueError(f"unknown templates {unknown}; choose from {sorted(known)}")
        object.__setattr__(self, "templates", tuple(self.templates))


# --------------------------------------------------------------------------- the world
def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


class _NamesExhaustedError(Exception):
    """Every name-sharing variant of a name is already used in this world."""


class _World:
    """A small random world: entities with typed relations, registered in both directions."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.entities: dict[str, dict[str, Any]] = {}

    # ---- names
    def _choice(self, pool: tuple[str, ...]) -> str:
        return pool[int(self.rng.integers(len(pool)))]

    def _unique(self, make: Callable[[], str]) -> str:
        for _ in range(100):
            name = make()
            if name not in self.entities:
                return name
        # Name-sharing variants of one name are few; the caller falls back to an unrelated name.
        raise _NamesExhaustedError

    def _add(self, kind: str, name: str, **attributes: Any) -> str:
        self.entities[name] = {"kind": kind, "name": name, **attributes}
        return name

    # ---- entities; ``like`` makes a confuser that shares part of the name
    def person(self, occupation: str, like: str | None = None, birth_year: int | None = None) -> str:
        def make() -> str:
            if like is not None:
                first, last = like.split(" ", 1)
                if self.rng.random() < 0.7:
                    return f"{self._choice(FIRST_NAMES)} {last}"
                return f"{first} {self._choice(LAST_NAMES)}"
            return f"{self._choice(FIRST_NAMES)} {self._choice(LAST_NAMES)}"

        name = self._unique(make)
        year = int(self.rng.integers(1905, 1986)) if birth_year is None else birth_year
        return self._add(
            "person",
            name,
            occupation=occupation,
            birth_year=year,
            birth_city=self.city(),
            university=self.university(),
            links=[],
        )

    def city(self, like: str | None = None, reuse: float = 0.3) -> str:
        cities = [n for n, e in self.entities.items() if e["kind"] == "city"]
        if like is None and cities and self.rng.random() < reuse:
            return cities[int(self.rng.integers(len(cities)))]

        def make() -> str:
            if like is not None:
                prefix = next((p for p in CITY_PREFIXES if like.startswith(p)), self._choice(CITY_PREFIXES))
                return prefix + self._choice(CITY_SUFFIXES)
            return self._choice(CITY_PREFIXES) + self._choice(CITY_SUFFIXES)

        return self._add(
            "city",
            self._unique(make),
            country=self._choice(COUNTRIES),
            river=self._choice(RIVERS),
            population=int(self.rng.integers(20, 900)) * 1000,
        )

    def university(self, like: str | None = None, reuse: float = 0.3) -> str:
        universities = [n for n, e in self.entities.items() if e["kind"] == "university"]
        if like is None and universities and self.rng.random() < reuse:
            return universities[int(self.rng.integers(len(universities)))]
        city = self.city()
        base = None
        if like is not None:
            base = like.removeprefix("University of ").split(" ")[0]

        def make() -> str:
            invented = self._choice(CITY_PREFIXES) + self._choice(CITY_SUFFIXES)
            place = base or (city if self.rng.random() < 0.5 else invented)
            founder = base or self._choice(LAST_NAMES)
            return (
                f"University of {place}",
                f"{place} State University",
                f"{founder} Institute of Technology",
                f"{founder} College",
            )[int(self.rng.integers(4))]

        return self._add("university", self._unique(make), city=city, year=int(self.rng.integers(1600, 1991)))

    def _title(self, like: str | None) -> str:
        def make() -> str:
            if like is not None:
                noun = like.split(" ")[-1]
                return f"The {self._choice(ADJECTIVES)} {noun}"
            adjective, noun = self._choice(ADJECTIVES), self._choice(NOUNS)
            form = int(self.rng.integers(3))
            return (f"The {adjective} {noun}", f"{adjective} {noun}", f"{noun} of the {self._choice(NOUNS)}")[form]

        return self._unique(make)

    def film(
        self,
        director: str | None = None,
        num_stars: int = 1,
        based_on: str | None = None,
        like: str | None = None,
        year: int | None = None,
    ) -> str:
        # Dates stay consistent: people are born well before the films they make or star in.
        if year is None:
            earliest = self.entities[director]["birth_year"] + 25 if director else 1940
            year = int(self.rng.integers(min(earliest, 2020), 2024))
        if director is None:
            director = self.person("film director", birth_year=year - int(self.rng.integers(25, 60)))
        stars = [self.person("actor", birth_year=year - int(self.rng.integers(18, 60))) for _ in range(num_stars)]
        name = self._add(
            "film",
            self._title(like),
            year=year,
            genre=self._choice(FILM_GENRES),
            director=director,
            stars=stars,
            based_on=based_on,
        )
        self.link(director, "directed", name)
        for star in stars:
            self.link(star, "starred", name)
        return name

    def book(self, author: str | None = None, like: str | None = None) -> str:
        author = author or self.person("novelist")
        year = int(self.rng.integers(self.entities[author]["birth_year"] + 20, 2024))
        name = self._add("book", self._title(like), year=year, genre=self._choice(BOOK_GENRES), author=author)
        self.link(author, "wrote", name)
        return name

    def band(self, like: str | None = None, city: str | None = None, year: int | None = None) -> str:
        def make() -> str:
            noun = like.split(" ")[-1] if like is not None else self._choice(NOUNS) + "s"
            return f"The {self._choice(ADJECTIVES)} {noun}"

        year = int(self.rng.integers(1950, 2016)) if year is None else year
        return self._add(
            "band",
            self._unique(make),
            year=year,
            city=city or self.city(),
            genre=self._choice(MUSIC_GENRES),
        )

    def company(self, founder: str | None = None, like: str | None = None, year: int | None = None) -> str:
        if founder is None:
            born = None if year is None else year - int(self.rng.integers(20, 50))
            founder = self.person("entrepreneur", birth_year=born)

        def make() -> str:
            root = like.rsplit(" ", 1)[0] if like is not None else self._choice(LAST_NAMES)
            return f"{root} {self._choice(COMPANY_SUFFIXES)}"

        if year is None:
            born = self.entities[founder]["birth_year"]
            year = int(self.rng.integers(born + 20, born + 55))
        name = self._add(
            "company",
            self._unique(make),
            year=year,
            founder=founder,
            city=self.city(),
            industry=self._choice(INDUSTRIES),
        )
        self.link(founder, "founded", name)
        return name

    def link(self, person: str, relation: str, target: str) -> None:
        self.entities[person]["links"].append((relation, target))

    def confuser(self, name: str) -> str:
        """A new entity of ``name``'s kind whose name shares a part with it (a HotpotQA-style distractor).

        When every name-sharing variant is taken, the new entity gets an unrelated name of that kind.
        """
        try:
            return self._confuser(name, like=name)
        except _NamesExhaustedError:
            return self._confuser(name, like=None)

    def _confuser(self, name: str, like: str | None) -> str:
        entity = self.entities[name]
        kind = entity["kind"]
        if kind == "person":
            other = self.person(entity["occupation"], like=like)
            if entity["occupation"] == "actor":
                film = self.film()
                self.entities[film]["stars"].append(other)
                self.link(other, "starred", film)
                self.entities[other]["birth_year"] = self.entities[film]["year"] - int(self.rng.integers(18, 60))
            elif entity["occupation"] == "film director":
                self.film(director=other)
            elif entity["occupation"] == "novelist":
                self.book(author=other)
            elif entity["occupation"] == "entrepreneur":
                self.company(founder=other)
            return other
        if kind == "film":
            return self.film(like=like)
        if kind == "book":
            return self.book(like=like)
        if kind == "band":
            return self.band(like=like)
        if kind == "company":
            return self.company(like=like)
        if kind == "university":
            return self.university(like=like, reuse=0.0)
        return self.city(like=like, reuse=0.0)

    # ---- paragraphs: a list of (fact keys, sentence); the first sentence introduces the entity
    def paragraph(self, name: str, max_filler: int) -> list[tuple[frozenset[str], str]]:
        entity, rng = self.entities[name], self.rng
        kind = entity["kind"]
        short = name.rsplit(" ", maxsplit=1)[-1] if kind == "person" else name
        body: list[tuple[frozenset[str], str]] = []
        if kind == "person":
            occupation = entity["occupation"]
            intro = (
                frozenset({"birth_year"}),
                f"{name} (born {entity['birth_year']}) is {_article(occupation)} {occupation}.",
            )
            body.append((frozenset({"birth_city"}), f"{short} was born in {entity['birth_city']}."))
            body.append((frozenset({"university"}), f"{short} studied at {entity['university']}."))
            for relation, target in entity["links"]:
                year = self.entities[target]["year"]
                text = {
                    "directed": f"{short} directed the film {target}, released in {year}.",
                    "starred": f"{short} starred in the film {target} ({year}).",
                    "wrote": f"{short} wrote the novel {target}, published in {year}.",
                    "founded": f"In {year}, {short} founded the company {target}.",
                }[relation]
                body.append((frozenset({f"{relation}:{target}"}), text))
            fillers = [
                f"{short} has received several regional awards.",
                f"Early in life, {short} worked as a teacher.",
                f"{short} is known for a reserved public persona.",
                f"{short} has given many interviews about the craft.",
            ]
        elif kind == "film":
            intro = (frozenset({"year"}), f"{name} is a {entity['year']} {entity['genre']} film.")
            body.append((frozenset({"director"}), f"It was directed by {entity['director']}."))
            body.append((frozenset({"stars"}), f"The film stars {' and '.join(entity['stars'])}."))
            if entity["based_on"]:
                # The novel's author is left to the novel's own page, so the question needs both hops.
                body.append((frozenset({"based_on"}), f"It is based on the novel {entity['based_on']}."))
            fillers = [
                "It received mixed reviews from critics.",
                "Principal photography lasted eleven weeks.",
                "The score was recorded with a small string ensemble.",
                "It was later restored for a home video release.",
            ]
        elif kind == "book":
            if rng.random() < 0.5:
                intro = (
                    frozenset({"year", "author"}),
                    f"{name} is a {entity['year']} {entity['genre']} novel by {entity['author']}.",
                )
            else:
                intro = (frozenset(), f"{name} is {_article(entity['genre'])} {entity['genre']} novel.")
                body.append(
                    (
                        frozenset({"author", "year"}),
                        f"It was written by {entity['author']} and published in {entity['year']}.",
                    )
                )
            fillers = [
                "The novel was translated into several languages.",
                "Its first edition had a print run of a few thousand copies.",
                "Critics praised its structure.",
            ]
        elif kind == "band":
            intro = (frozenset(), f"{name} is {_article(entity['genre'])} {entity['genre']} band.")
            body.append((frozenset({"city", "year"}), f"The band was formed in {entity['city']} in {entity['year']}."))
            fillers = [
                "The band has released four studio albums.",
                "Its line-up has changed several times.",
                "The group toured widely in its early years.",
            ]
        elif kind == "company":
            intro = (frozenset(), f"{name} is {_article(entity['industry'])} {entity['industry']} company.")
            body.append((frozenset({"founder", "year"}), f"It was founded by {entity['founder']} in {entity['year']}."))
            body.append((frozenset({"city"}), f"Its headquarters are in {entity['city']}."))
            fillers = [
                "The company employs several thousand people.",
                "It was listed on a stock exchange decades later.",
                "It has expanded into neighbouring markets.",
            ]
        elif kind == "university":
            intro = (frozenset({"city"}), f"{name} is a public university in {entity['city']}.")
            body.append((frozenset({"year"}), f"It was founded in {entity['year']}."))
            fillers = [
                "It is organised into several faculties.",
                "Its library holds a large collection of manuscripts.",
                "The university admits students from many countries.",
            ]
        else:
            intro = (frozenset({"country"}), f"{name} is a city in {entity['country']}.")
            body.append((frozenset(), f"It lies on the river {entity['river']}."))
            body.append((frozenset(), f"Its population was {entity['population']:,} at the last census."))
            fillers = [
                "The city has a well-preserved old town.",
                "It is a regional centre of trade.",
                "A university hospital is located there.",
            ]
        num_fillers = int(rng.integers(0, min(max_filler, len(fillers)) + 1))
        chosen = [fillers[int(i)] for i in rng.choice(len(fillers), size=num_fillers, replace=False)]
        body += [(frozenset(), text) for text in chosen]
        order = rng.permutation(len(body))
        return [intro] + [body[int(i)] for i in order]


@dataclass
class _Question:
    """A question about a world: its answer, and the (entity, fact key) chain that proves it."""

    question: str
    answer: str
    type: str
    chain: list[tuple[str, str]]
    distractor_answers: list[str]
    decomposition: list[str] | None = None


# --------------------------------------------------------------------------- HotpotQA questions
def _bridge(world: _World, template: str) -> _Question:
    w = world
    if template == "director_of_film_starring":
        film = w.film(num_stars=2)
        actor, co_star = w.entities[film]["stars"]
        director = w.entities[film]["director"]
        return _Question(
            f"Who directed the film that starred {actor}?",
            director,
            "bridge",
            [(actor, f"starred:{film}"), (film, "director")],
            [co_star, actor],
        )
    if template == "birth_city_of_director":
        film = w.film()
        director = w.entities[film]["director"]
        return _Question(
            f"In which city was the director of {film} born?",
            w.entities[director]["birth_city"],
            "bridge",
            [(film, "director"), (director, "birth_city")],
            [],
        )
    if template == "university_of_author":
        book = w.book()
        author = w.entities[book]["author"]
        return _Question(
            f"Which university did the author of {book} attend?",
            w.entities[author]["university"],
            "bridge",
            [(book, "author"), (author, "university")],
            [],
        )
    if template == "founding_year_of_university":
        person = w.person(w._choice(("actor", "novelist", "film director")))
        university = w.entities[person]["university"]
        year = w.entities[university]["year"]
        return _Question(
            f"In what year was the university attended by {person} founded?",
            str(year),
            "bridge",
            [(person, "university"), (university, "year")],
            [str(w.entities[person]["birth_year"])],
        )
    if template == "headquarters_of_company":
        company = w.company()
        founder = w.entities[company]["founder"]
        return _Question(
            f"In which city is the company founded by {founder} headquartered?",
            w.entities[company]["city"],
            "bridge",
            [(founder, f"founded:{company}"), (company, "city")],
            [w.entities[founder]["birth_city"]],
        )
    if template == "country_of_band_city":
        band = w.band()
        city = w.entities[band]["city"]
        wrong = [c for c in COUNTRIES if c != w.entities[city]["country"]]
        return _Question(
            f"In which country is the city where {band} was formed?",
            w.entities[city]["country"],
            "bridge",
            [(band, "city"), (city, "country")],
            [wrong[int(w.rng.integers(len(wrong)))]],
        )
    book = w.book()
    author = w.entities[book]["author"]
    film = w.film(based_on=book, year=min(2024, w.entities[book]["year"] + int(w.rng.integers(1, 30))))
    return _Question(
        f"Who wrote the novel that {film} is based on?",
        author,
        "bridge",
        [(film, "based_on"), (book, "author")],
        [w.entities[film]["director"]],
    )


def _distinct_years(world: _World, low: int, high: int) -> tuple[int, int]:
    first = int(world.rng.integers(low, high))
    second = int(world.rng.integers(low, high - 1))
    return first, second + (second >= first)


def _comparison(world: _World, template: str, yes: bool) -> _Question:
    w = world
    if template == "founded_first":
        kind = w._choice(("company", "university", "band"))
        year_a, year_b = _distinct_years(w, 1800 if kind == "university" else 1950, 2016)
        if kind == "company":
            a, b = w.company(year=year_a), w.company(year=year_b)
            keys = ("year", "year")
        elif kind == "band":
            a, b = w.band(year=year_a), w.band(year=year_b)
            keys = ("year", "year")
        else:
            a, b = w.university(reuse=0.0), w.university(reuse=0.0)
            w.entities[a]["year"], w.entities[b]["year"] = year_a, year_b
            keys = ("year", "year")
        verb = "formed" if kind == "band" else "founded"
        first, other = (a, b) if year_a < year_b else (b, a)
        return _Question(
            f"Which was {verb} first, {a} or {b}?", first, "comparison", [(a, keys[0]), (b, keys[1])], [other]
        )
    if template == "born_first":
        year_a, year_b = _distinct_years(w, 1905, 1986)
        a = w.person("actor", birth_year=year_a)
        b = w.person("novelist", birth_year=year_b)
        first, other = (a, b) if year_a < year_b else (b, a)
        return _Question(
            f"Who was born first, {a} or {b}?", first, "comparison", [(a, "birth_year"), (b, "birth_year")], [other]
        )
    if template == "released_later":
        year_a, year_b = _distinct_years(w, 1990, 2024)
        a, b = w.film(year=year_a), w.film(year=year_b)
        later, other = (a, b) if year_a > year_b else (b, a)
        return _Question(
            f"Which film was released more recently, {a} or {b}?",
            later,
            "comparison",
            [(a, "year"), (b, "year")],
            [other],
        )
    if template == "same_birth_city":
        a, b = w.person("actor"), w.person("film director")
        if yes:
            w.entities[b]["birth_city"] = w.entities[a]["birth_city"]
        elif w.entities[b]["birth_city"] == w.entities[a]["birth_city"]:
            w.entities[b]["birth_city"] = w.city(reuse=0.0)
        return _Question(
            f"Were {a} and {b} born in the same city?",
            "yes" if yes else "no",
            "comparison",
            [(a, "birth_city"), (b, "birth_city")],
            ["no" if yes else "yes"],
        )
    director = w.person("film director")
    a = w.film(director=director)
    b = w.film(director=director if yes else None)
    return _Question(
        f"Were {a} and {b} directed by the same person?",
        "yes" if yes else "no",
        "comparison",
        [(a, "director"), (b, "director")],
        ["no" if yes else "yes"],
    )


# --------------------------------------------------------------------------- StrategyQA questions
def _strategy(world: _World, template: str, yes: bool) -> _Question:
    w, rng = world, world.rng
    answer = "Yes" if yes else "No"
    if template == "director_university_after":
        film = w.film()
        director = w.entities[film]["director"]
        university = w.entities[director]["university"]
        founded = w.entities[university]["year"]
        threshold = founded - int(rng.integers(1, 40)) if yes else founded + int(rng.integers(0, 40))
        return _Question(
            f"Did the director of {film} study at a university founded after {threshold}?",
            answer,
            "strategy",
            [(film, "director"), (director, "university"), (university, "year")],
            [],
            [
                f"Who directed {film}?",
                f"Which university did {director} attend?",
                f"When was {university} founded?",
                f"Is {founded} after {threshold}?",
            ],
        )
    if template == "author_born_before_film":
        book = w.book()
        author = w.entities[book]["author"]
        born = w.entities[author]["birth_year"]
        release = min(2024, born + int(rng.integers(1, 40))) if yes else max(1895, born - int(rng.integers(1, 40)))
        film = w.film(year=release)
        return _Question(
            f"Was the author of {book} born before {film} was released?",
            answer,
            "strategy",
            [(book, "author"), (author, "birth_year"), (film, "year")],
            [],
            [
                f"Who wrote {book}?",
                f"When was {author} born?",
                f"When was {film} released?",
                f"Is {born} before {release}?",
            ],
        )
    if template == "company_older_than_university":
        founder = w.person("entrepreneur")
        year_company, year_university = _distinct_years(w, 1800, 2016)
        if (year_company < year_university) != yes:
            year_company, year_university = year_university, year_company
        w.entities[founder]["birth_year"] = min(w.entities[founder]["birth_year"], year_company - 20)
        company = w.company(founder=founder, year=year_company)
        university = w.university(reuse=0.0)
        w.entities[university]["year"] = year_university
        return _Question(
            f"Is the company founded by {founder} older than {university}?",
            answer,
            "strategy",
            [(founder, f"founded:{company}"), (company, "year"), (university, "year")],
            [],
            [
                f"Which company did {founder} found?",
                f"When was {company} founded?",
                f"When was {university} founded?",
                f"Is {year_company} earlier than {year_university}?",
            ],
        )
    if template == "born_where_band_formed":
        person = w.person("musician")
        band = w.band(city=w.entities[person]["birth_city"] if yes else None)
        if not yes and w.entities[band]["city"] == w.entities[person]["birth_city"]:
            w.entities[band]["city"] = w.city(reuse=0.0)
        born_in, formed_in = w.entities[person]["birth_city"], w.entities[band]["city"]
        return _Question(
            f"Was {person} born in the city where {band} was formed?",
            answer,
            "strategy",
            [(person, "birth_city"), (band, "city")],
            [],
            [f"Where was {person} born?", f"Where was {band} formed?", f"Is {born_in} the same city as {formed_in}?"],
        )
    if template == "alive_at_premiere":
        person = w.person("novelist")
        born = w.entities[person]["birth_year"]
        release = min(2024, born + int(rng.integers(1, 38))) if yes else max(1895, born - int(rng.integers(1, 30)))
        film = w.film(year=release)
        return _Question(
            f"Could {person} have attended the premiere of {film}?",
            answer,
            "strategy",
            [(person, "birth_year"), (film, "year")],
            [],
            [f"When was {person} born?", f"When was {film} released?", f"Was {person} born before {release}?"],
        )
    company = w.company()
    city = w.entities[company]["city"]
    country = w.entities[city]["country"]
    asked = country if yes else [c for c in COUNTRIES if c != country][int(rng.integers(len(COUNTRIES) - 1))]
    return _Question(
        f"Is the company {company} headquartered in {asked}?",
        answer,
        "strategy",
        [(company, "city"), (city, "country")],
        [],
        [f"Where is {company} headquartered?", f"Which country is {city} in?", f"Is {country} the same as {asked}?"],
    )


# --------------------------------------------------------------------------- records
def _record(world: _World, question: _Question, config: WorldConfig, task_id: str) -> dict[str, Any]:
    rng = world.rng
    gold_titles: list[str] = []
    for name, _ in question.chain:
        if name not in gold_titles:
            gold_titles.append(name)
    # Distractors: first an entity sharing a name part with each gold one, then other entities of the
    # world (the people and places the gold paragraphs mention), then more confusers.
    distractors: list[str] = []
    for title in gold_titles:
        if len(distractors) < config.num_distractors:
            distractors.append(world.confuser(title))
    mentioned = [name for name in world.entities if name not in gold_titles and name not in distractors]
    # People and works first: cities are the least confusable paragraphs.
    shuffled = [mentioned[int(i)] for i in rng.permutation(len(mentioned))]
    shuffled.sort(key=lambda name: world.entities[name]["kind"] == "city")
    for name in shuffled:
        if len(distractors) >= config.num_distractors:
            break
        distractors.append(name)
    while len(distractors) < config.num_distractors:
        seed_title = (gold_titles + distractors)[int(rng.integers(len(gold_titles) + len(distractors)))]
        distractors.append(world.confuser(seed_title))
    # Paragraphs are written only now, after every relation exists, so each lists all its links.
    paragraphs = {name: world.paragraph(name, config.max_filler_sentences) for name in gold_titles + distractors}
    supporting_facts: list[list[Any]] = []
    evidence: list[Any] = []
    for name, key in question.chain:
        index = next(i for i, (keys, _) in enumerate(paragraphs[name]) if key in keys)
        evidence.append([name, index])
        if [name, index] not in supporting_facts:
            supporting_facts.append([name, index])
    order = rng.permutation(len(paragraphs))
    titles = list(paragraphs)
    context = [[titles[int(i)], [text for _, text in paragraphs[titles[int(i)]]]] for i in order]
    wrong = [*question.distractor_answers, *_same_type_answers(world, question.answer, paragraphs)]
    wrong = [a for a in wrong if a.lower() != question.answer.lower()][:6]
    record: dict[str, Any] = {
        "_id": task_id,
        "question": question.question,
        "answer": question.answer,
        "type": question.type,
        "supporting_facts": supporting_facts,
        "context": context,
        "distractor_answers": list(dict.fromkeys(wrong)),
    }
    if question.decomposition is not None:
        record["decomposition"] = list(question.decomposition)
        record["evidence"] = evidence + ["operation"] * (len(question.decomposition) - len(evidence))
        record["facts"] = [paragraphs[name][index][1] for name, index in evidence]
        record["distractor_answers"] = ["No" if question.answer == "Yes" else "Yes"]
    return record


def _same_type_answers(world: _World, answer: str, paragraphs: dict[str, Any]) -> list[str]:
    """Wrong answers of the gold answer's type that the paragraphs mention (a confused reader's picks)."""
    text = " ".join(sentence for sentences in paragraphs.values() for _, sentence in sentences)
    entity = world.entities.get(answer)
    if entity is not None:
        pool = [n for n, e in world.entities.items() if e["kind"] == entity["kind"] and n != answer]
    elif answer.isdigit():
        pool = sorted({str(e["year"]) for e in world.entities.values() if "year" in e} - {answer})
    elif answer in COUNTRIES:
        pool = [c for c in COUNTRIES if c != answer]
    else:
        pool = []
    # Names the paragraphs mention are the likeliest confusions; an unmentioned one is a blind guess.
    ranked = [name for name in pool if name in text] + [name for name in pool if name not in text]
    if not ranked and entity is not None:
        ranked = [world.confuser(answer)]
    elif not ranked and answer.isdigit():
        ranked = [str(int(answer) + int(world.rng.integers(1, 30)))]
    return ranked


def _pick(rng: np.random.Generator, names: tuple[str, ...], allowed: tuple[str, ...]) -> str | None:
    pool = [name for name in names if not allowed or name in allowed]
    return pool[int(rng.integers(len(pool)))] if pool else None


def generate_hotpotqa_task(config: WorldConfig, seed: int, index: int) -> dict[str, Any]:
    """The HotpotQA-format task at ``index`` of the procedural dataset seeded ``seed``.

    A bridge question (find an entity, then a fact about it) or, with probability
    ``config.comparison_fraction``, a comparison question (a fact about each of two entities).

    Raises:
        ValueError: If ``config.templates`` names no HotpotQA template.
    """
    rng = seeded_rng(seed, index, 1)
    world = _World(rng)
    bridge = _pick(rng, HOTPOTQA_BRIDGE_TEMPLATES, config.templates)
    comparison = _pick(rng, HOTPOTQA_COMPARISON_TEMPLATES, config.templates)
    if bridge is None and comparison is None:
        raise ValueError("config.templates names no HotpotQA template; add bridge or comparison templates")
    use_comparison = comparison is not None and (bridge is None or rng.random() < config.comparison_fraction)
    yes = bool(rng.random() < config.yes_probability)
    question = _comparison(world, comparison, yes) if use_comparison else _bridge(world, bridge)
    return _record(world, question, config, f"world-hotpotqa-{seed}-{index}")


def generate_strategyqa_task(config: WorldConfig, seed: int, index: int) -> dict[str, Any]:
    """The StrategyQA-style yes/no task at ``index`` of the procedural dataset seeded ``seed``.

    Raises:
        ValueError: If ``config.templates`` names no StrategyQA template.
    """
    rng = seeded_rng(seed, index, 2)
    world = _World(rng)
    template = _pick(rng, STRATEGYQA_TEMPLATES, config.templates)
    if template is None:
        raise ValueError("config.templates names no StrategyQA template; add one of STRATEGYQA_TEMPLATES")
    yes = bool(rng.random() < config.yes_probability)
    return _record(world, _strategy(world, template, yes), config, f"world-strategyqa-{seed}-{index}")


def corpus_paragraphs(records: list[dict[str, Any]]) -> list[tuple[str, list[str]]]:
    """Every ``(title, sentences)`` paragraph of ``records``' contexts, in order (for fullwiki corpora)."""
    return [(title, list(sentences)) for record in records for title, sentences in record["context"]]
