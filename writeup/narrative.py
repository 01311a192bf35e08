"""The write-up's sentences (writeup.ipynb), formatted from writeup/report.py's tables.

report computes and draws; this module says what it found, in the words the notebook prints,
so that the notebook's cells stay a line or two each and every figure in its prose comes from
the runs. Each function returns Markdown (a sentence, a list, a paragraph) for report.say; where
the runs lack what a sentence needs, it says so instead of guessing. Torch-free, like report.

    from writeup import narrative
    from writeup import report
    sweep = report.load_sweep("runs")
    report.say(narrative.baselines(sweep, "test"))
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from core.names import label
from writeup import report
from writeup.report import Sweep, interval_text, num, pct


def _join(lines: list[str]) -> str:
    return "\n".join(f"- {line}" for line in lines)


# ------------------------------------------------------------------------ the data


def dataset(d: report.Dataset, manifest: pd.DataFrame) -> str:
    """What the prepared dataset holds: pairs, images and concepts per split, labels, size."""
    return (f"Dataset `{d.name}` (source: {d.source}, split by {d.split_by or 'image'}): **{len(manifest):,} "
            f"image-caption pairs over {len(d.images):,} images** ({report.counts(d.per_split)} images"
            + (f"; {report.counts(d.concepts)} concepts" if len(d.concepts) else "")
            + f"), {len(d.labels)} labels" + (f", rendered at {d.size} px" if d.size else "") + ". The first rows:")


def captions_and_labels(manifest: pd.DataFrame, d: report.Dataset) -> str:
    words = manifest["caption"].str.split().str.len()
    shares = d.labels / d.labels.sum()
    return (f"Captions are short (a median of {words.median():.0f} words, at most {words.max()}); the largest label, "
            f"*{shares.idxmax()}*, holds {pct(shares.max())} of the pairs and the smallest, *{shares.idxmin()}*, "
            f"{pct(shares.min())}: zero-shot accuracy (section 6) is read against that.")


def identical(manifest: pd.DataFrame, split: str) -> str | None:
    """The held-out split's sets of identical images: how many, of which labels, and examples."""
    sets = report.twin_sets(manifest, split)
    if not sets:
        return None
    labels = pd.concat(sets)["label"].value_counts()
    examples = "; ".join(" = ".join(f"“{c}”" for c in rows["caption"]) for rows in sets[:2])
    return (f"In {split}, {sum(map(len, sets))} images form {len(sets)} sets of byte-identical images; by label: "
            f"{report.counts(labels)}. For example: {examples}.")


def split_lesson(lesson: pd.DataFrame) -> str:
    """The comparison of the reference on the leaky split against the honest one."""
    lines = []
    for (run, ref), rows in lesson.groupby(["run", "reference"], sort=False):
        lines.append(f"**The split lesson**: {run} − {ref} on {rows['split'].iloc[0]} ({rows['interval'].iloc[0]}): "
                     + "; ".join(f"{label(r['metric'])} {report.short_verdict(r)}" for _, r in rows.iterrows()))
    return "\n\n".join(lines) or "This sweep does not train the reference on a second split."


# ------------------------------------------------------------------------ the training


def model(sweep: Sweep) -> str:
    c = sweep.config(sweep.reference)
    name = c.get("model", "?")
    return (f"Model `{name}`: {report.MODELS.get(name, 'a Hugging Face CLIP checkpoint, both towers pretrained')}; "
            f"{c.get('head', 'linear')} projection heads into a {c.get('embed_dim')}-d space; "
            f"{c.get('image_size')} px images.")


def cost(sweep: Sweep) -> str:
    ref = sweep.reference
    slowest = max(sweep.groups, key=lambda g: report.seconds(sweep, g))
    return (f"**Cost per run**: a seed of {ref} took {report.seconds(sweep, ref, 'wall'):.1f} s from start to end, "
            f"{report.seconds(sweep, ref):.1f} s of it training (the locked towers' features cached); the slowest to "
            f"train, {slowest}, took {report.seconds(sweep, slowest):.1f} s per seed, not counting the aligned maps, "
            "fitted after the runs (Appendix B).")


# ------------------------------------------------------------------------ results


def generalisation_gap(sweep: Sweep) -> str:
    """The reference's R@1 on the training probe against validation, beside the closed form's."""
    ref = sweep.reference
    end = {split: report.figures(sweep, [ref], split) for split in ("train", "val")}
    text = (f"At the end, {ref}'s image → text R@1 is {interval_text(end['train'], ref, 'i2t_R@1')} on the training "
            f"probe (over seeds: the probe has no bootstrap) and {interval_text(end['val'], ref, 'i2t_R@1')} on "
            "validation.")
    fitted = report.closed_form_groups(sweep)
    if fitted:
        cf = {split: report.figures(sweep, fitted[:1], split) for split in ("train", "val")}
        text += (f" The closed form, one solve with no optimiser, shows the same kind of gap: "
                 f"{num(cf['train'].iloc[0]['i2t_R@1'])} on its training images, "
                 f"{interval_text(cf['val'], fitted[0], 'i2t_R@1')} on validation. The gap is not the contrastive "
                 "optimiser's: linear heads on these features, fitted either way, know the training concepts far "
                 "better than new ones.")
    return text


def pairs(before, after, images: int) -> str:
    (p0, n0, r0), (p1, n1, r1) = report.pair_summary(before), report.pair_summary(after)
    return (f"On these {images} images the true caption is its row's best for {r0} before training and {r1} after; "
            f"the mean cosine of true pairs goes from {p0:.2f} to {p1:.2f}, that of wrong pairs from {n0:.2f} to "
            f"{n1:.2f} (a handful of images, for the picture, not a result).")


def map_movement(m: report.AlignedMap) -> str:
    width = report.map_width(m)
    lines = []
    for g, n in zip(m.groups, m.runs, strict=True):
        s = report.movement_summary(m.points[n])
        lines.append(f"{g} ({n}), step 0 → end: median move {s['moved']:.2f}, median floor {s['floor']:.2f} (the map "
                     f"is {width:.1f} wide); {pct(s['beyond'])} beyond their floor"
                     + (": mostly UMAP's noise, so its arrows say little." if s["moved"] < s["floor"] else "."))
    return _join(lines)


def drift(table: pd.DataFrame, a: str, b: str) -> str:
    beyond = (table["moved"] > table["floor"]).mean()
    return (f"**Drift from A = {a} to B = {b}**, the largest rank changes (*neighbours kept*: of its ten nearest; "
            f"*moved*: on the map). {pct(beyond)} of all samples moved beyond their floor.")


def gap(sweep: Sweep, run: str, gaps: pd.DataFrame, embeddings: pd.DataFrame) -> str:
    steps = sorted(embeddings["step"].unique())
    d = report.gap_directions(sweep, sweep.group_of(run))
    near = {s: report.neighbours(*report.step_rows(embeddings, s)) for s in (steps[0], steps[-1])}
    g0, g1 = gaps["modality gap"]
    (i0, i1), (t0, t1) = gaps.iloc[:, 1], gaps.iloc[:, 2]
    own = near[steps[-1]]["same_modality"]
    gap_end = "not closing: a gap remains, as Liang et al. found" if g1 > 0.05 else "closing"
    return (f"In {run} (all its validation samples; a description, not an estimate) the gap goes from {g0:.3f} to "
            f"{g1:.3f}, {gap_end}; the image cone from {i0:.3f} to {i1:.3f} and the caption cone from {t0:.3f} to "
            f"{t1:.3f}. The gap shrank in {d['gap']} of {sweep.group_of(run)}'s {d['seeds']} seeds. A point's nearest "
            f"neighbour is of its own modality for {pct(near[steps[0]]['same_modality'])} of points at step 0 and "
            f"{pct(own)} at the end" + (": the clouds are nearer, not mixed." if own > 0.5 else ": they mix."))


def gap_probe(sweep: Sweep, run: str, probe: pd.DataFrame) -> str:
    own = report.run_table(sweep, run, "val")
    half = (own["i2t_R@1 high"] - own["i2t_R@1 low"]).iloc[0] / 2

    def spread(measure: str, state: str) -> str:
        v = probe[(probe["state"] == state) & (probe["measure"] == measure)]["value"]
        return f"{v.min():.3f}–{v.max():.3f}" if len(v) else "–"

    end = probe[(probe["state"] == "end") & (probe["measure"] == "i2t_R@1")]["value"]
    flat = end.max() - end.min() < half
    text = (f"Over the shifts, image → text R@1 spans {spread('i2t_R@1', 'step 0')} at step 0 and "
            f"{spread('i2t_R@1', 'end')} at the end, a spread {'smaller' if flat else 'larger'} than the half-width "
            f"of the run's own interval over images ({half:.3f}): "
            + ("closing the gap neither helps nor hurts retrieval." if flat else "the gap does change retrieval."))
    if (probe["measure"] == "zero_shot_accuracy").any():
        text += (f" Zero-shot accuracy spans {spread('zero_shot_accuracy', 'step 0')} at step 0 and "
                 f"{spread('zero_shot_accuracy', 'end')} at the end: at step 0, shifting moves the narrow image cone "
                 "(section 6) and with it the prompt it faces.")
    return text

def image_retrieval(sweep: Sweep, run: str, images: pd.DataFrame, captions: pd.DataFrame) -> str:
    own = report.run_table(sweep, run, "val")
    text = (f"{run}: image → text R@1 {interval_text(own, run, 'i2t_R@1')}, R@5 {interval_text(own, run, 'i2t_R@5')} "
            f"on its {len(images)} validation images (over images); median rank {images['rank'].median():.0f} of "
            f"{len(captions)}.")
    concept_of = report.concepts_of(sweep.runs[run].config.get("data", ""))
    if concept_of:
        c = report.concept_outcomes(report.split_samples(sweep.runs[run], "val"), "image", concept_of)
        text += (f" For {pct((c['concept'] - c['exact']).mean())} of the images the first caption is another "
                 "variant of the right concept (section 6 counts these).")
    return text


def queries(hits: pd.DataFrame, k: int = 5) -> str:
    """What the free-text queries found, by their acceptance rules."""
    answerable = hits.dropna(subset=["rank of the first accepted"])
    rank, chance = answerable["rank of the first accepted"].astype(float), answerable["the same in a random order"]
    first, in_k = int((rank == 1).sum()), int((answerable[f"accepted in the {k} nearest"] > 0).sum())
    worse = list(answerable.index[rank > chance])
    most = "most first answers are wrong" if first < len(answerable) / 2 else "most first answers are right"
    return (f"Of the {len(answerable)} queries that some validation image answers, {first} "
            f"{'gets' if first == 1 else 'get'} an accepted image first and {in_k} one among the {k} nearest: "
            f"**{most}**. The first accepted image comes earlier than "
            f"in a random order for {len(answerable) - len(worse)} of them"
            + (f", later for {', '.join(f'“{q}”' for q in worse)}" if worse else "")
            + ". A description that shares no word with the name (\"wear on your head\" for \"billed cap\") asks "
            "more than a few thousand names teach.")


# ------------------------------------------------------------------------ experiments


def baselines(sweep: Sweep, split: str, effects: pd.DataFrame) -> str:
    if effects.empty:
        return "This sweep has no closed-form configuration, so training is compared with step 0 and chance only."
    shown = effects[effects["metric"].isin(["i2t_R@1", "t2i_R@1", "zero_shot_accuracy"])]
    return (f"Trained {sweep.reference} − the closed form, paired on the same images ({effects['interval'].iloc[0]}): "
            + "; ".join(f"{label(r.metric)} {r.verdict}" for r in shown.itertuples()) + ".")


def towers(sweep: Sweep, split: str) -> str | None:
    """Why the towers' configurations score alike: how often they answer as their LL reference."""
    comparison = next((c for c in sweep.comparisons if "unlock_text" in (c.get("factor") or [])
                       or "unlock_image" in (c.get("factor") or [])), None)
    if comparison is None:
        return None
    ref = comparison["reference"]
    lines, across = [], np.nan
    for run in comparison["runs"]:
        a = report.answer_agreement(sweep, ref, run, split)
        across = a["across_seeds"]  # the reference's own seeds: the same for every run
        if np.isfinite(a["same_seed"]):
            lines.append(f"{run} answers {pct(a['same_seed'])} of the {split} images with the caption {ref} of "
                         "the same seed answers")
    if not lines:
        return None
    return (f"**Why the towers' rows are alike**: {'; '.join(lines)}; two seeds of {ref} agree on "
            f"{pct(across)}. Unlocking a block for so few steps changes the answers far less than the seed does: "
            "this comparison cannot show what LiT measures.")


def temperature_groups(sweep: Sweep) -> list[str]:
    """The configurations of the comparisons whose factor is the temperature (learned or fixed,
    and at which value), references first."""
    found = [c for c in sweep.comparisons if {"learn_temperature", "init_temperature"} & set(c.get("factor") or [])]
    return list(dict.fromkeys(g for c in found for g in (c["reference"], *c["runs"])))


def temperature(sweep: Sweep, groups: list[str]) -> str:
    learning = [g for g in groups if sweep.config(g).get("learn_temperature", True)]
    if not learning:
        return "No configuration of these comparisons learns its temperature."
    ref = learning[0]
    end = report.figures(sweep, [ref], "val", metrics=["temperature"])
    learned = float(end.iloc[0]["temperature"])
    fixed = sorted(float(sweep.config(g).get("init_temperature") or 0.07) for g in groups
                   if not sweep.config(g).get("learn_temperature", True))
    bracket = (f"; the fixed values ({', '.join(f'{t:g}' for t in fixed)}) "
               + ("bracket it" if fixed and fixed[0] <= learned <= fixed[-1] else "do not bracket it")) if fixed else ""
    start = float(sweep.config(ref).get("init_temperature") or 0.07)
    return (f"The learned temperature of {ref} ends at {learned:.4f} [{end.iloc[0]['temperature low']:.4f}, "
            f"{end.iloc[0]['temperature high']:.4f}] (95% interval over seeds), from its start at {start:g}{bracket}.")


# ------------------------------------------------------------------------ evaluation


def levels(table: pd.DataFrame) -> str:
    """Where the exact and the concept level of concept_effects give different verdicts."""
    word = table.map(lambda cell: cell.rsplit(" ", 1)[-1])
    exact, concept = word.columns
    apart = word[word[exact] != word[concept]]
    if apart.empty:
        return "The two levels give the same verdict for every comparison."
    return ("The levels part ways for " + "; ".join(f"{run}: {w[exact]} exact, {w[concept]} at the concept level"
                                                    for (_, run), w in apart.iterrows())
            + ". An exact-level loss with no detectable change at the concept level fits a loss in telling "
            "variants apart (a skin tone, a gender) rather than in recognising the picture; the concept level's "
            "wider intervals make that weak evidence.")


def zero_shot_shares(sweep: Sweep, split: str, run: report.run_store.Run) -> str:
    """The zero-shot table read against the label shares: a uniform guess, always answering the
    largest label, and the reference's accuracy on that label's images and on the rest."""
    shares = report.label_shares(report.split_samples(run, split))
    if shares.empty:
        return ""
    top, ref = shares.index[0], sweep.reference
    per = pd.concat([report.per_image(sweep, n, split) for n in sweep.groups[ref]])
    on_top, rest = per.loc[per["label"] == top, "zero_shot"].mean(), per.loc[per["label"] != top, "zero_shot"].mean()
    return (f"A uniform guess scores {num(report.chance(sweep, split)['zero_shot_accuracy'])} in both; always "
            f"answering *{top}*, the largest {split} label, scores {shares.iloc[0]:.3f} in accuracy. {ref} gets "
            f"{on_top:.3f} of the *{top}* images right and {rest:.3f} of the others (its seeds' images pooled): "
            + ("it falls below the majority's share because it seldom gets the majority right."
               if on_top < rest else "the majority's images are not where it loses."))


def confusion(outcomes: pd.DataFrame, samples: pd.DataFrame) -> str:
    """Where the largest label's images go, from the probe's validation outcomes, and how faithfully
    the probe repeats the stored evaluation."""
    top = report.label_shares(outcomes).index[0]
    answered = outcomes.loc[outcomes["label"] == top, "predicted"].value_counts(normalize=True)
    other = answered.drop(top, errors="ignore")
    text = (f"On validation, *{top}* images are answered *{top}* for {pct(answered.get(top, 0.0))} of them"
            + (f" and *{other.index[0]}* for {pct(other.iloc[0])}." if len(other) else "."))
    return text + (f" (The probe's outcomes under the run's template agree with the stored ones for "
                   f"{pct(report.agreement(outcomes, samples))} of the images.)")


def majority_caption(m, movers: pd.DataFrame, split: str) -> str:
    ref = movers["reference"].iloc[0]
    return (f"**Configuration − {', '.join(movers['reference'].unique())}** on {split} (paired, seeds and images); "
            f"*answers {m.label}*: the change in the share of validation images so answered ({ref}: "
            f"{m.shares[ref]:.3f}):")


def step0(a0: dict | None, sweep: Sweep, run: str) -> str:
    if a0 is None:
        return "No stored prompts in these runs (written before prompts were stored), so no step-0 breakdown."
    own = report.run_table(sweep, run, "val", "first")
    uniform = 1 / a0["labels"]
    high = own["zero_shot_accuracy high"].iloc[0] if "zero_shot_accuracy high" in own else np.nan
    below = "detectably below" if high < uniform else "not detectably below"
    return (f"In {run} at step 0 the image cone is {num(a0['cone'])}; *{a0['label']}* is answered for "
            f"{pct(a0['answered'])} of the validation images and is the label of {pct(a0['share'])} of them. Its "
            f"zero-shot accuracy there is {interval_text(own, run, 'zero_shot_accuracy')} (one run, over images), "
            f"{below} a uniform guess's {num(uniform)}.")


def majority(m, table: pd.DataFrame) -> str:
    lines = [f"{', '.join(gs)}: {reading}." for reading, gs in m.readings().items()]
    rho, p, n = report.rank_agreement(table, "i2t_R@1", "zero_shot_accuracy")
    lines.append(f"Over the {n} configurations, Spearman's rank correlation of test image → text R@1 with zero-shot "
                 f"accuracy is {num(rho, 2)} (p = {num(p, 2)}).")
    return _join(lines)


def prompts(holdout: dict) -> str:
    chosen = "the run's own template" if holdout["own"] else holdout["chosen"]
    return (f"**Chosen on one half, measured on the other** (several variants on the same images invite a lucky "
            f"winner): on a random half of the validation concepts ({holdout['choose_images']} images) the best is "
            f"{chosen}; on the other half ({holdout['measure_images']} images), against the run's own template: "
            f"{holdout['verdict']}.")


def forgetting(sweep: Sweep, f, split: str) -> str:
    alpha, score = report.wise_choice(f)
    if alpha is None:
        return "No WiSE-FT ratios to choose from (or a stage that did not move), so no mix is chosen."
    rows = f.table.index
    start, end, chosen = rows[0], rows[-1], next(r for r in rows if r.startswith(alpha))
    chance = [report.run_table(sweep, n, "val", "first") for n in sweep.groups[f.group]]
    chance = [float(c["chance_R@1"].iloc[0]) for c in chance if "chance_R@1" in c]
    lines = [f"Stage 2 starts on its own validation images at {f.cell(start, 'own val')}"
             + (f", against a chance rate of {num(float(np.mean(chance)))}" if chance else "") + ".",
             f"**Forgetting** on `{f.held_out}`, start to end: {report.stats.verdict(*f.change(end), f.metric)}. "
             f"**Chosen on validation: {chosen}** (score {score.max():.2f}; either end scores 0.50), whose change "
             f"there is {report.stats.verdict(*f.change(chosen), f.metric)} (an interval that errs wide: no "
             "detectable difference here is weak evidence of no forgetting)."]
    lines.append(f"On {split}: image → text R@1 on stage 2's images {f.cell(chosen, 'own test')} (start "
                 f"{f.cell(start, 'own test')}, end {f.cell(end, 'own test')})"
                 + (f"; on stage 1's (`{f.held_out_test}`) {f.cell(chosen, f.held_out_test)} (start "
                    f"{f.cell(start, f.held_out_test)}, end {f.cell(end, f.held_out_test)})." if f.held_out_test else
                    "; stage 2 does not evaluate stage 1's test images (an extra set with `split = \"test\"` in its "
                    "`extra_evals` would)."))
    return _join(lines)


# ------------------------------------------------------------------------ discussion


def ties(sweep: Sweep, split: str, manifest: pd.DataFrame | None) -> str | None:
    """The ceilings identical images put on R@1 both ways, from the data and from the runs' ties."""
    ref = sweep.reference
    if not report.has_split(sweep, ref, split):
        return None
    runs = [report.run_table(sweep, n, split) for n in sweep.groups[ref]]
    tied = [float(f["t2i_tied_queries"].iloc[0]) for f in runs if "t2i_tied_queries" in f]
    captions = [float(f["n_captions"].iloc[0]) for f in runs if "n_captions" in f]
    if not tied or not captions:
        return None
    spread = f"{min(tied):.0f}" if min(tied) == max(tied) else f"{min(tied):.0f} to {max(tied):.0f}"
    text = (f"{spread} of the {captions[0]:.0f} {split} captions tie their image with a twin in {ref}'s runs, and a "
            f"tie counts against the query: caption → image R@1 cannot exceed {num(1 - min(tied) / captions[0])}.")
    sets = report.twin_sets(manifest, split) if manifest is not None else []
    if sets:
        images = len(manifest[manifest["split"] == split].drop_duplicates("image_id"))
        spare = sum(map(len, sets)) - len(sets)
        text += (f" Twins rank the captions alike, so at most one of each set is right image → text: R@1 cannot "
                 f"exceed {num(1 - spare / images)}.")
    return text


def stage2_start(sweep: Sweep, forgetting_: list, concepts: pd.DataFrame, split: str,
                 manifest: pd.DataFrame | None) -> str | None:
    lines = []
    for f in forgetting_:
        if f.group not in concepts.index:
            continue
        line = (f"{f.group} at its end on its own {split} images: image → text R@1 "
                f"{interval_text(concepts, f.group, 'i2t_R@1 exact')} exact, "
                f"{interval_text(concepts, f.group, 'i2t_R@1 concept')} at the concept level "
                f"({report.interval_label(sweep, [f.group])})")
        labels = sweep.config(f.group).get("include_labels") or []
        if manifest is not None and labels:
            own = manifest[(manifest["split"] == split) & manifest["label"].isin(labels)].drop_duplicates("image_id")
            twins = sum(rows["label"].isin(labels).sum() for rows in report.twin_sets(manifest, split))
            line += f"; {twins} of its {len(own)} {split} images have an identical twin"
        lines.append(line + ".")
    return _join(lines) if lines else None


def conclusion(sweep: Sweep, cf: pd.DataFrame, base: pd.DataFrame, effects: pd.DataFrame, lesson: pd.DataFrame,
               concepts: pd.DataFrame, majority_, forgetting_: list) -> str:
    """The answers to the introduction's questions, in its order."""
    ref = sweep.reference
    answers = []
    if not cf.empty:
        shown = cf[cf["metric"].isin(["i2t_R@1", "zero_shot_accuracy"])]
        clear = report.disjoint(base, base.index[1], base.index[-1], "i2t_R@1")
        sign = int(report.detectable(cf[cf["metric"] == "i2t_R@1"]).iloc[0]) if (cf["metric"] == "i2t_R@1").any() else 0
        answers.append(f"**Baselines**: trained {ref} − the closed form: " + "; ".join(
            f"{label(r.metric)} {r.verdict}" for r in shown.itertuples())
            + f". Training's image → text R@1 interval lies {'clear of' if clear else 'not clear of'} step 0's, and "
            + {0: "does not detectably beat", 1: "beats", -1: "falls short of"}[sign]
            + " the closed form's.")
    if not effects.empty:
        r1 = effects[effects["metric"] == "i2t_R@1"]
        found = r1[report.detectable(r1) != 0]
        losses = bool(len(found)) and bool((found["difference"] < 0).all())
        answers.append(f"**One factor at a time**: {len(found)} of {len(r1)} comparisons change test image → text R@1 "
                       f"detectably ({', '.join(found['run']) or 'none'}), the other {len(r1) - len(found)} show no "
                       "detectable difference" + ("; every detectable change of it is a loss, so no single factor "
                                                  "tried detectably improves the reference's image → text R@1 "
                                                  "(other figures: section 5's table)." if losses else "."))
    answers += [f"**The leaky split**: {r.run} − {r.reference}, image → text R@1 on {r.split} ({r.interval}): "
                f"{r.verdict}." for r in lesson[lesson["metric"] == "i2t_R@1"].itertuples()]
    if ref in concepts.index:
        shifted = [] if majority_ is None else [g for g in majority_.table.index if majority_.shifted(g)]
        answers.append(f"**Unseen concepts**: {ref}'s image → text R@1 is "
                       f"{interval_text(concepts, ref, 'i2t_R@1 exact')} exact, "
                       f"{interval_text(concepts, ref, 'i2t_R@1 concept')} at the concept level; of the "
                       f"{0 if majority_ is None else len(majority_.table)} zero-shot gains of section 5, "
                       f"{len(shifted)} lie on the largest label alone.")
    for f in forgetting_:
        alpha, _ = report.wise_choice(f)
        pick = next((r for r in f.table.index if alpha and r.startswith(alpha)), f.table.index[-1])
        answers.append(f"**Forgetting**: on `{f.held_out}`, start to end: "
                       f"{report.stats.verdict(*f.change(f.table.index[-1]), f.metric)}; at {pick}, chosen on "
                       f"validation: {report.stats.verdict(*f.change(pick), f.metric)}, with "
                       f"{f.cell(pick, 'own test')} on stage 2's test images.")
    if not answers:
        return "No comparisons in this sweep, so no effect is claimed; the tables above describe each configuration."
    return "\n".join(f"{i}. {a}" for i, a in enumerate(answers, 1))
