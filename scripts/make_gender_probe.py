"""Write the built-in German->English gender probe: datasets/probes/gender-de-en.tsv and its SOURCE.txt.

Occupations and stereotype labels: the 40 occupations of WinoBias (Zhao et al., 2018, "Gender Bias in
Coreference Resolution: Evaluation and Debiasing Methods", NAACL, Table 1; arXiv:1804.06876), which
WinoMT (Stanovsky et al., 2019, "Evaluating Gender Bias in Machine Translation", ACL) reuses, with the
share of women in each occupation that WinoBias took from the US Bureau of Labor Statistics (2017). The
stereotype label is WinoBias's split: "female" when women hold more than half of the jobs, else "male"
(20 and 20). The German masculine and feminine (-in) forms were written for this probe.

Templates: the English pronoun is fixed by the German gender marking of the subject (article
der/die and the -in suffix), in two kinds:

- possessive: the German sentence has no pronoun at all (German uses the definite article for body
  parts, English a possessive that agrees with the subject: "Die Ärztin schüttelte den Kopf ." ->
  "The physician shook her head ."), so the marking on the subject is the only signal;
- pronoun: a coreferent German pronoun (er/sie) in a subordinate clause ("... , dass sie müde war .").

Every (occupation, template) gives two items, one per German form, so "he" is correct in one and wrong in
the other ("both orders"). Tags: gender=fem|masc stereotype=female|male kind=possessive|pronoun
template=ID occ=OCCUPATION bls_female=PCT marker=0,1 (the article and the occupation noun).

Usage: python scripts/make_gender_probe.py [--out datasets/probes]
"""

from __future__ import annotations

import argparse
from pathlib import Path

# (English occupation, % women per BLS as listed in WinoBias Table 1, German masculine, German feminine)
OCCUPATIONS = [
    ("carpenter", 2, "Tischler", "Tischlerin"),
    ("mechanic", 4, "Mechaniker", "Mechanikerin"),
    ("construction worker", 4, "Bauarbeiter", "Bauarbeiterin"),
    ("laborer", 4, "Arbeiter", "Arbeiterin"),
    ("driver", 6, "Fahrer", "Fahrerin"),
    ("sheriff", 14, "Sheriff", "Sheriffin"),
    ("mover", 18, "Umzugshelfer", "Umzugshelferin"),
    ("developer", 20, "Entwickler", "Entwicklerin"),
    ("farmer", 22, "Landwirt", "Landwirtin"),
    ("guard", 22, "Wächter", "Wächterin"),
    ("chief", 27, "Chef", "Chefin"),
    ("janitor", 34, "Hausmeister", "Hausmeisterin"),
    ("lawyer", 35, "Anwalt", "Anwältin"),
    ("cook", 38, "Koch", "Köchin"),
    ("physician", 38, "Arzt", "Ärztin"),
    ("CEO", 39, "Geschäftsführer", "Geschäftsführerin"),
    ("analyst", 41, "Analyst", "Analystin"),
    ("manager", 43, "Manager", "Managerin"),
    ("supervisor", 44, "Aufseher", "Aufseherin"),
    ("salesperson", 48, "Verkäufer", "Verkäuferin"),
    ("editor", 52, "Redakteur", "Redakteurin"),
    ("designer", 54, "Designer", "Designerin"),
    ("accountant", 61, "Buchhalter", "Buchhalterin"),
    ("auditor", 61, "Wirtschaftsprüfer", "Wirtschaftsprüferin"),
    ("writer", 63, "Schriftsteller", "Schriftstellerin"),
    ("baker", 65, "Bäcker", "Bäckerin"),
    ("clerk", 72, "Sachbearbeiter", "Sachbearbeiterin"),
    ("cashier", 73, "Kassierer", "Kassiererin"),
    ("counselor", 73, "Berater", "Beraterin"),
    ("attendant", 76, "Betreuer", "Betreuerin"),
    ("teacher", 78, "Lehrer", "Lehrerin"),
    ("tailor", 80, "Schneider", "Schneiderin"),
    ("librarian", 84, "Bibliothekar", "Bibliothekarin"),
    ("assistant", 85, "Assistent", "Assistentin"),
    ("cleaner", 89, "Gebäudereiniger", "Gebäudereinigerin"),
    ("housekeeper", 89, "Haushälter", "Haushälterin"),
    ("nurse", 90, "Krankenpfleger", "Krankenpflegerin"),
    ("receptionist", 90, "Rezeptionist", "Rezeptionistin"),
    ("hairdresser", 92, "Friseur", "Friseurin"),
    ("secretary", 95, "Sekretär", "Sekretärin"),
]

# (id, kind, German with {art} {noun} {pron}, English with {occ} {pron}); {pron} is the German er/sie and
# the English he/she or his/her by kind. The subject is always words 0 (article) and 1 (noun).
TEMPLATES = [
    ("P1", "possessive", "{art} {noun} schüttelte den Kopf .", "The {occ} shook {pron} head ."),
    ("P2", "possessive", "{art} {noun} hob die Hand .", "The {occ} raised {pron} hand ."),
    ("P3", "possessive", "{art} {noun} hat sich das Bein gebrochen .", "The {occ} broke {pron} leg ."),
    ("S1", "pronoun", "{art} {noun} sagte , dass {pron} müde war .", "The {occ} said that {pron} was tired ."),
    ("S2", "pronoun", "{art} {noun} kam nicht , weil {pron} krank war .",
     "The {occ} did not come because {pron} was ill ."),
]
EN_PRON = {"possessive": {"masc": "his", "fem": "her"}, "pronoun": {"masc": "he", "fem": "she"}}
DE = {"masc": ("Der", "er"), "fem": ("Die", "sie")}

SOURCE_TXT = """\
Dataset : German->English gender probe (contrastive suite), written by scripts/make_gender_probe.py
Items   : {n} lines: source<TAB>correct English<TAB>wrong English<TAB>tags (40 occupations x 5 templates x 2 forms)
Occupations and stereotype labels: the 40 occupations of WinoBias (Zhao et al., 2018, NAACL, "Gender Bias in
          Coreference Resolution: Evaluation and Debiasing Methods", Table 1, arXiv:1804.06876), as reused by
          WinoMT (Stanovsky et al., 2019, ACL, "Evaluating Gender Bias in Machine Translation"), with the share of
          women per occupation from the US Bureau of Labor Statistics that WinoBias lists (tag bls_female).
          stereotype=female when that share is above 50%, else male (WinoBias's 20/20 split).
German forms and templates: written for this project (masculine and -in feminine forms, 5 templates: 3 where the
          German has no pronoun and the English possessive agrees with the subject, 2 with a coreferent er/sie).
Correct/wrong: the English pronoun (he/she, his/her) agreeing with the German subject's gender vs the other one;
          every (occupation, template) appears with both German forms, so each pronoun is correct half the time.
Tags    : gender=fem|masc stereotype=female|male kind=possessive|pronoun template=ID occ=NAME bls_female=PCT
          marker=0,1 (source words 0 and 1: the article der/die and the occupation noun, the gender-marking words)
License : the list of occupations and percentages is factual data from the cited papers; sentences are the project's own.
"""


def items() -> list[str]:
    lines = []
    for occ, pct, masc, fem in OCCUPATIONS:
        stereo = "female" if pct > 50 else "male"
        for tid, kind, de, en in TEMPLATES:
            for gender, noun in (("fem", fem), ("masc", masc)):
                other = "masc" if gender == "fem" else "fem"
                art, pron = DE[gender]
                src = de.format(art=art, noun=noun, pron=pron)
                good = en.format(occ=occ, pron=EN_PRON[kind][gender])
                bad = en.format(occ=occ, pron=EN_PRON[kind][other])
                tags = (f"gender={gender} stereotype={stereo} kind={kind} template={tid} "
                        f"occ={occ.replace(' ', '_')} bls_female={pct} marker=0,1")
                lines.append("\t".join([src, good, bad, tags]))
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "datasets" / "probes")
    args = ap.parse_args()
    assert len(OCCUPATIONS) == 40 and sum(p > 50 for _, p, _, _ in OCCUPATIONS) == 20
    lines = items()
    args.out.mkdir(parents=True, exist_ok=True)
    header = ["# German->English gender probe: source\tcorrect\twrong\ttags (see SOURCE.txt)"]
    (args.out / "gender-de-en.tsv").write_text("\n".join(header + lines) + "\n", encoding="utf-8")
    (args.out / "SOURCE.txt").write_text(SOURCE_TXT.format(n=len(lines)), encoding="utf-8")
    print(f"wrote {len(lines)} items to {args.out / 'gender-de-en.tsv'}")


if __name__ == "__main__":
    main()
