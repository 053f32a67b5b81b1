"""The toy PLM: a tiny character-level Chinese BERT pretrained (masked LM) on the toy news text, offline.

It stands in for ``bert-base-chinese`` in the toy pipeline (``python -m espnet_ot.bin.pretrain_toy_plm``). The
pieces (vocabulary, masking, length batches, held-out accuracy, the BERT itself) are also used by the tests.
"""

import hashlib
import json
import os
import random
import time
from pathlib import Path
from typing import Callable, Collection, Dict, Iterator, List, Optional, Sequence, Tuple

import torch

from espnet_ot.toy.text import char_counts, load_news_sentences, read_aishell_split_sentences
from espnet_ot.utils.progress import Progress

SPECIAL_TOKENS: Tuple[str, ...] = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
PAD_ID, UNK_ID, CLS_ID, SEP_ID, MASK_ID = range(len(SPECIAL_TOKENS))
FORMAT_VERSION = 1
OPTIONS_NAME = "toy_plm.json"
EVAL_MASK_PROB = 0.15  # held-out accuracy is always measured with BERT's 15% masking


def build_vocab(sentences: Sequence[str], vocab_size: int) -> List[str]:
    """Special tokens followed by the vocab_size - 5 most frequent characters (ties by code point)."""
    if vocab_size <= len(SPECIAL_TOKENS):
        raise ValueError(f"vocab_size: must exceed the {len(SPECIAL_TOKENS)} special tokens, got {vocab_size}")
    ranked = sorted(char_counts(sentences).items(), key=lambda item: (-item[1], item[0]))
    return list(SPECIAL_TOKENS) + [char for char, _ in ranked[: vocab_size - len(SPECIAL_TOKENS)]]


def encode(sentences: Sequence[str], vocab: Sequence[str]) -> List[torch.Tensor]:
    """[CLS] c1 ... cn [SEP] ids per sentence, characters outside the vocabulary as [UNK]."""
    index = {tok: i for i, tok in enumerate(vocab)}
    return [torch.tensor([CLS_ID] + [index.get(c, UNK_ID) for c in s] + [SEP_ID], dtype=torch.long) for s in sentences]


def pad_batch(seqs: Sequence[torch.Tensor]) -> torch.Tensor:
    """Right-pad id sequences with [PAD] into (B, T)."""
    return torch.nn.utils.rnn.pad_sequence(list(seqs), batch_first=True, padding_value=PAD_ID)


def mask_tokens(
    ids: torch.Tensor,
    vocab_size: int,
    generator: torch.Generator,
    mask_prob: float = 0.15,
    replace: bool = True,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """BERT masking of the characters (not [CLS]/[SEP]/[PAD]); at least one per sentence.

    With replace, chosen positions become [MASK] 80%, a random character 10%, unchanged 10%;
    without it they all become [MASK] (used for evaluation). Returns (inputs, labels with -100 elsewhere).
    """
    maskable = ids >= len(SPECIAL_TOKENS)
    maskable |= ids == UNK_ID
    scores = torch.rand(ids.shape, generator=generator)
    chosen = (scores < mask_prob) & maskable
    # guarantee one target per sentence: the maskable position with the lowest score
    lowest = torch.where(maskable, scores, torch.full_like(scores, 2.0)).argmin(dim=1)
    chosen[torch.arange(ids.size(0)), lowest] |= maskable[torch.arange(ids.size(0)), lowest]
    labels = torch.where(chosen, ids, torch.full_like(ids, -100))
    inputs = ids.clone()
    if replace:
        action = torch.rand(ids.shape, generator=generator)
        to_mask = chosen & (action < 0.8)
        to_random = chosen & (action >= 0.8) & (action < 0.9)
        random_ids = torch.randint(len(SPECIAL_TOKENS), vocab_size, ids.shape, generator=generator)
        inputs[to_mask] = MASK_ID
        inputs[to_random] = random_ids[to_random]
    else:
        inputs[chosen] = MASK_ID
    return inputs, labels


def _mlm_loss_and_hits(model, inputs: torch.Tensor, labels: torch.Tensor) -> Tuple[torch.Tensor, int, int]:
    """Masked-LM loss computed on the masked positions only (the output layer is the costly part)."""
    padded = inputs == PAD_ID
    attention_mask = (~padded).long() if bool(padded.any()) else None
    hidden = model.bert(input_ids=inputs, attention_mask=attention_mask).last_hidden_state
    where = labels != -100
    logits = model.cls(hidden[where])
    targets = labels[where]
    loss = torch.nn.functional.cross_entropy(logits, targets)
    hits = int((logits.argmax(-1) == targets).sum())
    return loss, hits, int(targets.numel())


def length_batches(ids: Sequence[torch.Tensor], batch_tokens: int, generator: torch.Generator) -> List[torch.Tensor]:
    """One epoch of padding-free batches: sentences grouped by length, about batch_tokens tokens per batch.

    Returns a shuffled list of (B, T) id tensors, each holding sentences of a single length T.
    """
    by_len: Dict[int, List[int]] = {}
    for i, seq in enumerate(ids):
        by_len.setdefault(len(seq), []).append(i)
    batches: List[torch.Tensor] = []
    for length in sorted(by_len):
        members = torch.tensor(by_len[length])
        members = members[torch.randperm(len(members), generator=generator)]
        size = max(1, batch_tokens // length)
        for start in range(0, len(members), size):
            batches.append(torch.stack([ids[i] for i in members[start : start + size].tolist()]))
    order = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in order]


@torch.no_grad()
def masked_accuracy(model, ids: Sequence[torch.Tensor], vocab_size: int, seed: int, batch_size: int = 256) -> Dict:
    """Held-out masked-character accuracy (15% of characters replaced by [MASK], fixed seed).

    Returns dict(accuracy, targets, labels) where labels holds every masked target id (for baselines).
    """
    was_training = model.training
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    hits = total = 0
    all_labels = []
    ids = sorted(ids, key=len)
    for start in range(0, len(ids), batch_size):
        batch = pad_batch(ids[start : start + batch_size])
        inputs, labels = mask_tokens(batch, vocab_size, gen, mask_prob=EVAL_MASK_PROB, replace=False)
        _, h, n = _mlm_loss_and_hits(model, inputs, labels)
        hits += h
        total += n
        all_labels.append(labels[labels != -100])
    model.train(was_training)
    return dict(accuracy=hits / max(1, total), targets=total, labels=torch.cat(all_labels) if all_labels else None)


def unigram_baseline(train_ids: Sequence[torch.Tensor], eval_labels: torch.Tensor) -> Tuple[int, float]:
    """Most frequent training character id and its accuracy when always guessed on eval_labels."""
    counts = torch.bincount(torch.cat([seq[1:-1] for seq in train_ids]))
    counts[: len(SPECIAL_TOKENS)] = 0
    best = int(counts.argmax())
    return best, float((eval_labels == best).float().mean())


def _endless_batches(ids: Sequence[torch.Tensor], batch_tokens: int, generator: torch.Generator) -> Iterator:
    while True:
        yield from length_batches(ids, batch_tokens, generator)


def lr_scale(step: int, total: int, warmup: float) -> float:
    """Linear warmup over the first warmup fraction of total steps, then linear decay to 0."""
    warm = max(1, int(warmup * total))
    if step < warm:
        return (step + 1) / warm
    return max(0.0, (total - step) / max(1, total - warm))


def train_step(model, optimizer, inputs: torch.Tensor, labels: torch.Tensor, lr: float) -> float:
    """One AdamW step on the masked-LM loss at the given learning rate; returns the loss."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    loss, _, _ = _mlm_loss_and_hits(model, inputs, labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    return float(loss.detach())


def split_news_sentences(
    min_len: int, max_len: int, exclude: Collection[str], heldout: int, seed: int
) -> Tuple[List[str], List[str]]:
    """(training, held-out) news sentences of min_len..max_len characters, without the excluded sentences."""
    pool = [s for s in load_news_sentences(min_len, max_len) if s not in exclude]
    random.Random(seed).shuffle(pool)
    if heldout < 1 or len(pool) <= heldout:
        raise ValueError(f"heldout: need 1 <= heldout < {len(pool)} (the sentences available), got {heldout}")
    return pool[heldout:], pool[:heldout]


def _fingerprint(items: Sequence[str]) -> str:
    return hashlib.sha1("\n".join(sorted(items)).encode("utf-8")).hexdigest()[:16]


def bert_config(
    vocab_size: int,
    hidden: int = 128,
    layers: int = 2,
    heads: int = 2,
    intermediate: Optional[int] = None,
    max_positions: int = 128,
    dropout: float = 0.0,
):
    """transformers' BertConfig of a tiny BERT (intermediate size 4 x hidden unless given)."""
    from transformers import BertConfig

    if hidden % heads:
        raise ValueError(f"hidden/heads: hidden size {hidden} is not divisible by {heads} heads")
    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=intermediate or 4 * hidden,
        max_position_embeddings=max_positions,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
        pad_token_id=PAD_ID,
    )


def save_char_bert(out_dir: Path, vocab: Sequence[str], model, max_length: int = 128) -> Path:
    """save_pretrained of a character BERT (BertModel or BertForMaskedLM) with its BertTokenizer (vocab.txt).

    A BertForMaskedLM gets a pooler like bert-base-chinese's, so that AutoModel (BertModel) loads every weight.
    """
    from transformers import BertTokenizer
    from transformers.models.bert.modeling_bert import BertPooler

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    vocab_file = out_dir / "vocab.txt"
    vocab_file.write_text("".join(tok + "\n" for tok in vocab), encoding="utf-8")
    tokenizer = BertTokenizer(
        vocab=str(vocab_file), do_lower_case=False, tokenize_chinese_chars=True, model_max_length=max_length
    )
    tokenizer.save_pretrained(str(out_dir))
    if hasattr(model, "bert") and model.bert.pooler is None:
        model.bert.pooler = BertPooler(model.config)
    model.save_pretrained(str(out_dir))
    return out_dir


def _reused(out_dir: Path, options: Dict, force: bool, log: Callable[[str], None]) -> Optional[Dict]:
    """The summary of a finished toy PLM in out_dir made with these options (None: train one)."""
    summary_path = out_dir / OPTIONS_NAME
    done = (out_dir / ".complete").is_file()
    if summary_path.is_file():
        old = json.loads(summary_path.read_text(encoding="utf-8"))
        if done and old.get("options") == options:
            log(
                f"pretrain_toy_plm: reusing the toy PLM in {out_dir} (same options; masked-char accuracy "
                f"{old['results']['accuracy']:.1%} vs unigram baseline {old['results']['baseline_accuracy']:.1%})"
            )
            return old
        if done and not force:
            raise FileExistsError(
                f"out: {out_dir} holds a toy PLM trained with other options; pass --force to retrain "
                "or choose another --out"
            )
    elif out_dir.is_dir() and any(out_dir.iterdir()):
        raise FileExistsError(f"out: {out_dir} is not empty and holds no toy PLM; choose another --out")
    return None


def _train(
    model,
    train_ids: Sequence[torch.Tensor],
    vocab_size: int,
    steps: Optional[int],
    minutes: float,
    threads: int,
    batch_tokens: int,
    mask_prob: float,
    lr: float,
    warmup: float,
    seed: int,
    log: Callable[[str], None],
) -> int:
    """Masked-LM training with AdamW (warmup, linear decay); returns the number of steps taken.

    With a time budget (steps None) the first steps are timed and fix the schedule length; with threads=0 they
    also compare 1 thread against 2 (on a busy machine 2 threads can be many times slower).
    """
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "LayerNorm" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "LayerNorm" not in n)]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}], lr=lr
    )
    gen = torch.Generator().manual_seed(seed)
    batches = _endless_batches(train_ids, batch_tokens, gen)
    seen = [0]

    def one_step(step: int, total: int) -> float:
        batch = next(batches)
        seen[0] += batch.size(0)
        inputs, labels = mask_tokens(batch, vocab_size, gen, mask_prob=mask_prob)
        return train_step(model, optimizer, inputs, labels, lr * lr_scale(step, total, warmup))

    t1 = time.time()
    candidates = [threads] if threads > 0 else sorted({min(2, os.cpu_count() or 1), 1}, reverse=True)
    probe_each = 8
    step = 0
    total = steps if steps is not None else 10**6
    timings: Dict[int, float] = {}
    if steps is None or steps > 1 + probe_each * len(candidates):
        one_step(step, total)  # the first step pays for allocations: not timed
        step += 1
        for n in candidates:
            torch.set_num_threads(n)
            start = time.time()
            for _ in range(probe_each):
                one_step(step, total)
                step += 1
            timings[n] = (time.time() - start) / probe_each
    chosen = min(timings, key=timings.get) if timings else candidates[0]
    torch.set_num_threads(chosen)
    speed = ", ".join(f"{n} thread{'s' if n > 1 else ''} {t * 1000:.0f} ms/step" for n, t in timings.items())
    if steps is None:
        total = step + max(1, int((minutes * 60 - (time.time() - t1)) / timings[chosen]))
        log(
            f"pretrain_toy_plm: {speed} -> {total} steps of ~{batch_tokens} tokens with {chosen} "
            f"thread{'s' if chosen > 1 else ''} in {minutes:g} min"
        )
    else:
        log(f"pretrain_toy_plm: training {total} steps of ~{batch_tokens} tokens ({speed or f'{chosen} threads'})")
    every = max(1, total // 5)
    running = None
    bar = Progress(total, "pretrain_toy_plm: training", unit="step", initial=step)
    while step < total:
        loss = one_step(step, total)
        running = loss if running is None else 0.98 * running + 0.02 * loss
        step += 1
        bar.update()
        if step % every == 0 or step == total:
            elapsed = time.time() - t1
            left = elapsed / max(1, step - bar.start_done) * (total - step)
            log(
                f"pretrain_toy_plm: step {step}/{total} loss {running:.3f} "
                f"({seen[0] / len(train_ids):.2f} epochs) [{elapsed:.0f}s, about {left:.0f}s left]"
            )
    bar.close()
    return total


def _evaluate(
    model,
    train_ids: Sequence[torch.Tensor],
    eval_ids: Sequence[torch.Tensor],
    toy_eval_ids: Sequence[torch.Tensor],
    vocab: Sequence[str],
    seed: int,
    log: Callable[[str], None],
) -> Dict:
    """Held-out masked-character accuracy against the unigram baseline (and on the toy dev+test sentences)."""
    eval_seed = seed + 12345
    res = masked_accuracy(model, eval_ids, len(vocab), eval_seed)
    best, base_acc = unigram_baseline(train_ids, res["labels"])
    results = dict(
        accuracy=res["accuracy"],
        baseline_accuracy=base_acc,
        baseline_token=vocab[best],
        eval_targets=res["targets"],
    )
    log(
        f"pretrain_toy_plm: held-out masked-character accuracy {res['accuracy']:.1%} vs unigram baseline "
        f"{base_acc:.1%} (always '{vocab[best]}') over {res['targets']} masked characters"
    )
    if res["accuracy"] < 1.5 * base_acc:
        log(
            "pretrain_toy_plm: WARNING: the model does not clearly beat the unigram baseline; "
            "train longer (--minutes/--steps)"
        )
    if toy_eval_ids:
        toy = masked_accuracy(model, toy_eval_ids, len(vocab), eval_seed)
        _, toy_base = unigram_baseline(train_ids, toy["labels"])
        results.update(toy_accuracy=toy["accuracy"], toy_baseline_accuracy=toy_base)
        log(
            f"pretrain_toy_plm: on the toy corpus dev+test sentences {toy['accuracy']:.1%} "
            f"vs unigram baseline {toy_base:.1%}"
        )
    return results


def pretrain_toy_plm(
    out: str,
    corpus: Optional[str] = None,
    minutes: float = 3.0,
    steps: Optional[int] = None,
    layers: int = 2,
    hidden: int = 128,
    heads: int = 2,
    vocab_size: int = 3000,
    min_len: int = 4,
    max_len: int = 32,
    batch_tokens: int = 2048,
    mask_prob: float = 0.4,
    lr: float = 2e-3,
    warmup: float = 0.05,
    heldout: int = 2000,
    seed: int = 0,
    threads: int = 0,
    force: bool = False,
    log: Callable[[str], None] = print,
) -> Dict:
    """Train (or reuse) the toy PLM in out and return its summary (options and accuracies).

    Args:
        out: output directory for save_pretrained (model, tokenizer) and toy_plm.json.
        corpus: toy corpus root (holding data_aishell/); its dev and test sentences are kept out of training.
        minutes: training time budget when steps is not given (the step count is set from the measured speed).
        steps: fixed number of training steps (reproducible; overrides minutes).
        layers: transformer layers.
        hidden: hidden size (intermediate size is 4x).
        heads: attention heads.
        vocab_size: vocabulary size including the 5 special tokens.
        min_len: shortest training sentence (characters).
        max_len: longest training sentence (characters).
        batch_tokens: tokens per step (batches hold sentences of one length, so no padding).
        mask_prob: fraction of characters masked for training.
        lr: peak AdamW learning rate (linear warmup, linear decay to 0).
        warmup: warmup fraction of the steps.
        heldout: held-out news sentences for the accuracy report.
        seed: seed for the held-out split, masking and initialization.
        threads: torch CPU threads; 0 times the first steps with 2 and with 1 thread and keeps the faster.
        force: retrain even if out holds a finished model with other options.
        log: progress printer.
    """
    from transformers import BertForMaskedLM

    t0 = time.time()
    if steps is None and not minutes > 0:
        raise ValueError(f"minutes: the training budget must be > 0, got {minutes}")
    if steps is not None and steps < 1:
        raise ValueError(f"steps: must be >= 1, got {steps}")
    if hidden % heads:
        raise ValueError(f"hidden/heads: hidden size {hidden} is not divisible by {heads} heads")
    exclude_set = set()
    if corpus is not None:
        splits = read_aishell_split_sentences(corpus)
        exclude_set = set(splits["dev"]) | set(splits["test"])
    options = dict(
        format_version=FORMAT_VERSION,
        minutes=None if steps is not None else float(minutes),
        steps=steps,
        layers=layers,
        hidden=hidden,
        heads=heads,
        vocab_size=vocab_size,
        min_len=min_len,
        max_len=max_len,
        batch_tokens=batch_tokens,
        mask_prob=mask_prob,
        lr=lr,
        warmup=warmup,
        heldout=heldout,
        seed=seed,
        excluded_sentences=_fingerprint(sorted(exclude_set)) if exclude_set else None,
    )
    out_dir = Path(out)
    old = _reused(out_dir, options, force, log)
    if old is not None:
        return old
    if threads < 0:
        raise ValueError(f"threads: must be >= 0 (0 = pick 1 or 2 by measured speed), got {threads}")
    torch.manual_seed(seed)

    train_sents, eval_sents = split_news_sentences(min_len, max_len, exclude_set, heldout, seed)
    vocab = build_vocab(train_sents, vocab_size)
    train_ids = encode(train_sents, vocab)
    log(
        f"pretrain_toy_plm: {len(train_sents)} training / {len(eval_sents)} held-out news sentences of "
        f"{min_len}-{max_len} characters ({len(exclude_set)} toy dev/test sentences excluded), "
        f"vocabulary {len(vocab)} [{time.time() - t0:.1f}s]"
    )
    model = BertForMaskedLM(bert_config(len(vocab), hidden, layers, heads))
    model.train()
    previous_threads = torch.get_num_threads()
    t1 = time.time()
    total = _train(
        model, train_ids, len(vocab), steps, minutes, threads, batch_tokens, mask_prob, lr, warmup, seed, log
    )
    results = dict(train_steps=total, train_sentences=len(train_ids), train_seconds=round(time.time() - t1, 1))
    toy_eval_ids = encode(sorted(exclude_set), vocab) if exclude_set else []
    results.update(_evaluate(model, train_ids, encode(eval_sents, vocab), toy_eval_ids, vocab, seed, log))

    (out_dir / ".complete").unlink(missing_ok=True)
    save_char_bert(out_dir, vocab, model)
    summary = dict(options=options, results=results)
    (out_dir / OPTIONS_NAME).write_text(json.dumps(summary, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    (out_dir / ".complete").touch()
    torch.set_num_threads(previous_threads)
    log(f"pretrain_toy_plm: saved model and tokenizer to {out_dir} [{time.time() - t0:.0f}s]")
    return summary
