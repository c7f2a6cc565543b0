"""A generated product catalog whose relevance generic text similarity gets wrong.

Every *intent* has several query phrasings, the products that satisfy it, and look-alike
products that share its words but not its meaning ("gaming mouse pad" vs a "game pad"
controller, "microsoft office" vs an "OfficeJet" printer). Grades: 3 for the intent's
products, 0 for the look-alikes and everything else. Queries of one intent end up on both
sides of the trainer's by-query split, so what is learned from clicks on one phrasing can be
measured on another. Deterministic for a seed; nothing is downloaded.
"""

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Intent:
    queries: tuple[str, ...]
    products: tuple[str, ...]  # templates; {brand} and {variant} are filled in
    look_alikes: tuple[str, ...]


BRANDS = (
    "Acme",
    "Norde",
    "Voltix",
    "Kestrel",
    "Lumo",
    "Brava",
    "Quill",
    "Zenith",
    "Orca",
    "Tandem",
    "Pico",
    "Rhino",
)
VARIANTS = ("black", "grey", "white", "blue", "XL", "compact", "pro", "2-pack", "mini", "plus")

INTENTS: tuple[Intent, ...] = (
    Intent(
        ("gaming mouse pad", "mousepad for gaming", "large desk mouse mat", "xl mouse pad"),
        (
            "{brand} extended desk mat for mouse, {variant}, stitched edges",
            "{brand} cloth mousing surface, non-slip rubber base, {variant}",
        ),
        (
            "{brand} wireless game pad controller for PC, {variant}",
            "{brand} gaming chair with lumbar pad, {variant}",
        ),
    ),
    Intent(
        ("microsoft office", "office suite license", "word and excel software"),
        (
            "{brand} productivity suite: documents, spreadsheets, slides, 1-year license",
            "Home and business software bundle for Windows, {variant} edition",
        ),
        (
            "{brand} OfficeJet all-in-one inkjet printer, {variant}",
            "{brand} office chair, mesh back, {variant}",
        ),
    ),
    Intent(
        ("apple charger", "iphone charging cable", "lightning cable"),
        (
            "{brand} USB-C to Lightning cable, 1 m, {variant}",
            "{brand} 20W fast power adapter for iPhone, {variant}",
        ),
        (
            "{brand} apple slicer and corer, stainless steel",
            "{brand} apple cider vinegar gummies, {variant}",
        ),
    ),
    Intent(
        ("running shoes", "trainers for jogging", "marathon sneakers"),
        (
            "{brand} road runner cushioned sneaker, {variant}",
            "{brand} lightweight jogging trainer with breathable mesh, {variant}",
        ),
        (
            "{brand} shoe rack, 3 tiers, {variant}",
            "{brand} running belt for phone and keys, {variant}",
        ),
    ),
    Intent(
        ("coffee maker", "drip coffee machine", "machine to brew coffee"),
        (
            "{brand} 12-cup programmable drip brewer, {variant}",
            "{brand} filter brewing machine with thermal carafe, {variant}",
        ),
        ("{brand} coffee table, oak veneer, {variant}", "{brand} coffee scented candle, {variant}"),
    ),
    Intent(
        ("baby monitor", "video monitor for nursery", "infant camera"),
        (
            "{brand} nursery video camera with night vision and two-way audio, {variant}",
            "{brand} infant sleep camera with room temperature sensor, {variant}",
        ),
        (
            "{brand} 27-inch computer monitor, {variant}",
            "{brand} baby bath tub, foldable, {variant}",
        ),
    ),
    Intent(
        ("noise cancelling headphones", "anc headphones", "over-ear headphones for travel"),
        (
            "{brand} over-ear wireless headset with active noise reduction, {variant}",
            "{brand} travel headset, 30 h battery, ANC, {variant}",
        ),
        (
            "{brand} noise machine for sleep, white noise, {variant}",
            "{brand} headphone stand, aluminium, {variant}",
        ),
    ),
    Intent(
        ("screen protector", "tempered glass for phone", "phone screen guard"),
        (
            "{brand} tempered glass film for smartphone display, {variant}",
            "{brand} anti-scratch glass guard for phone, {variant}",
        ),
        (
            "{brand} window screen repair kit, {variant}",
            "{brand} sun protector spray SPF 50, {variant}",
        ),
    ),
    Intent(
        ("yoga mat", "exercise mat for pilates", "non slip workout mat"),
        (
            "{brand} 6 mm TPE fitness mat with carry strap, {variant}",
            "{brand} pilates floor mat, non-slip, {variant}",
        ),
        ("{brand} yoga pants, high waist, {variant}", "{brand} door mat, coir, {variant}"),
    ),
    Intent(
        ("water bottle", "insulated drinking bottle", "reusable bottle for gym"),
        (
            "{brand} stainless steel vacuum flask, 750 ml, {variant}",
            "{brand} BPA-free sports bottle with straw lid, {variant}",
        ),
        (
            "{brand} water filter pitcher, {variant}",
            "{brand} hot water bottle with knitted cover, {variant}",
        ),
    ),
)


def build_catalog(
    seed: int = 0, per_template: int = 12, fillers: int = 600
) -> tuple[dict[str, str], dict[str, dict[str, int]]]:
    """``(catalog item_id -> text, judgments query -> {item_id: grade})``."""
    rng = random.Random(seed)
    catalog: dict[str, str] = {}
    judgments: dict[str, dict[str, int]] = {}
    n = 0

    def add(text: str) -> str:
        nonlocal n
        n += 1
        item_id = f"sku-{n:05d}"
        catalog[item_id] = text
        return item_id

    for intent in INTENTS:
        good = [
            add(t.format(brand=rng.choice(BRANDS), variant=rng.choice(VARIANTS)))
            for t in intent.products
            for _ in range(per_template)
        ]
        for t in intent.look_alikes:
            for _ in range(per_template):
                add(t.format(brand=rng.choice(BRANDS), variant=rng.choice(VARIANTS)))
        for query in intent.queries:
            judgments[query] = dict.fromkeys(good, 3)
    words = [
        w
        for i in INTENTS
        for t in i.look_alikes + i.products
        for w in t.split()
        if w.isalpha() and len(w) > 3
    ]
    for _ in range(fillers):
        add(f"{rng.choice(BRANDS)} {' '.join(rng.sample(words, 4))}")
    return catalog, judgments
