"""Tiny random-weight Hugging Face models for tests, built from configs inside the test run.

No hub, no network: a WordPiece tokenizer is built with the tokenizers library from a small
vocabulary, and a 2-layer BERT of hidden size 32 is initialised with a fixed seed. Each model is
saved as an ordinary Hugging Face model directory, the same thing a user points `source` at.
"""

from __future__ import annotations

import json
from pathlib import Path

TASKS = ("feature-extraction", "text-classification", "token-classification", "question-answering")

_WORDS = (
    "the a an is was are be to of and in that have it for not on with he as you do at this but his by "
    "from they we say her she or will my one all would there their what so up out if about who get which "
    "go me when make can like time no just him know take people into year your good some could them see "
    "other than then now look only come its over think also back after use two how our work first well "
    "way even new want because any these give day most us model serve fast cold start lambda function "
    "paris london berlin capital france germany city river mountain happy sad great terrible movie "
    "film book love hate john mary apple google new york question answer context what where when why"
).split()


def build_tokenizer(directory: Path, *, lowercase: bool = True) -> None:
    """Write tokenizer.json (+ tokenizer_config.json, special_tokens_map.json) for a tiny WordPiece vocab."""
    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordPiece

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)] + [str(d) for d in range(10)] + list(".,!?'-é")
    pieces = ["##" + ch for ch in letters]
    vocab_list = specials + sorted(set(_WORDS)) + letters + pieces
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(vocab_list))}
    tok = Tokenizer(WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(lowercase=lowercase, strip_accents=None, clean_text=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    tok.decoder = decoders.WordPiece(prefix="##")
    directory.mkdir(parents=True, exist_ok=True)
    tok.save(str(directory / "tokenizer.json"))
    (directory / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    (directory / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "BertTokenizerFast", "do_lower_case": lowercase, "model_max_length": 128,
        "cls_token": "[CLS]", "sep_token": "[SEP]", "pad_token": "[PAD]", "unk_token": "[UNK]",
        "mask_token": "[MASK]",
    }), encoding="utf-8")
    (directory / "special_tokens_map.json").write_text(json.dumps({
        "cls_token": "[CLS]", "sep_token": "[SEP]", "pad_token": "[PAD]", "unk_token": "[UNK]",
        "mask_token": "[MASK]",
    }), encoding="utf-8")


def build_tiny_model(directory: Path, task: str, *, seed: int = 0, multi_label: bool = False,
                     num_labels: int | None = None, sentence_transformers: bool = True) -> Path:
    """Save a tiny random BERT for ``task`` into ``directory`` and return it.

    feature-extraction models also get a sentence-transformers config (mean pooling, normalize)
    unless ``sentence_transformers`` is False.
    """
    import torch
    from transformers import (BertConfig, BertForQuestionAnswering, BertForSequenceClassification,
                              BertForTokenClassification, BertModel)

    directory = Path(directory)
    build_tokenizer(directory)
    vocab_size = len((directory / "vocab.txt").read_text(encoding="utf-8").split("\n")) - 1
    labels = {
        "text-classification": ["negative", "positive", "neutral"],
        "token-classification": ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"],
    }.get(task, [])
    if num_labels is not None and labels:
        labels = [f"LABEL_{i}" for i in range(num_labels)]
    config = BertConfig(
        vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=128, type_vocab_size=2,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )
    if labels:
        config.id2label = dict(enumerate(labels))
        config.label2id = {l: i for i, l in enumerate(labels)}
        config.num_labels = len(labels)
    if multi_label:
        config.problem_type = "multi_label_classification"
    torch.manual_seed(seed)
    model_cls = {
        "feature-extraction": BertModel,
        "text-classification": BertForSequenceClassification,
        "token-classification": BertForTokenClassification,
        "question-answering": BertForQuestionAnswering,
    }[task]
    model = model_cls(config).eval()
    model.save_pretrained(directory)
    if task == "feature-extraction" and sentence_transformers:
        (directory / "modules.json").write_text(json.dumps([
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
        ]), encoding="utf-8")
        (directory / "1_Pooling").mkdir(exist_ok=True)
        (directory / "1_Pooling" / "config.json").write_text(json.dumps({
            "word_embedding_dimension": 32, "pooling_mode_cls_token": False,
            "pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": False,
            "pooling_mode_mean_sqrt_len_tokens": False,
        }), encoding="utf-8")
        (directory / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 128}), encoding="utf-8")
    return directory


IMAGE_LABELS = ("cat", "dog", "bird", "fish", "car", "tree", "house")


def build_tiny_image_model(directory: Path, architecture: str = "vit", *, seed: int = 0, shortest_edge: int = 32,
                           crop_pct: float = 0.875) -> Path:
    """Save a tiny random image classifier (``vit`` or ``convnext``) with its preprocessor_config.json.

    ViT takes 32x32 images (patches of 8); ConvNeXt any size, its processor resizing the shorter edge
    to ``shortest_edge / crop_pct`` and center-cropping (or, from 384 up, resizing to a square).
    """
    import torch
    from transformers import (ConvNextConfig, ConvNextForImageClassification, ConvNextImageProcessor, ViTConfig,
                              ViTForImageClassification, ViTImageProcessor)

    directory = Path(directory)
    labels = dict(enumerate(IMAGE_LABELS))
    common = dict(id2label=labels, label2id={v: k for k, v in labels.items()}, num_labels=len(labels))
    torch.manual_seed(seed)
    if architecture == "vit":
        config = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                           intermediate_size=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, **common)
        model = ViTForImageClassification(config)
        processor = ViTImageProcessor(size={"height": 32, "width": 32})
    elif architecture == "convnext":
        config = ConvNextConfig(num_channels=3, patch_size=4, hidden_sizes=[8, 16], depths=[1, 1], num_stages=2,
                                **common)
        model = ConvNextForImageClassification(config)
        processor = ConvNextImageProcessor(size={"shortest_edge": shortest_edge}, crop_pct=crop_pct)
    else:
        raise ValueError(architecture)
    model.eval().save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory


def build_tiny_clip_model(directory: Path, *, seed: int = 0, text_sizes: dict | None = None,
                          vision_sizes: dict | None = None, projection_dim: int = 16) -> Path:
    """Save a tiny random CLIP (text and vision towers) with the tiny WordPiece tokenizer and a CLIP
    image processor (shorter edge to the image size, center crop): zero-shot image classification.
    ``text_sizes`` / ``vision_sizes`` override the towers' dimensions (bench/image_bench.py passes
    ViT-B/32's)."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    directory = Path(directory)
    build_tokenizer(directory)
    config_file = directory / "tokenizer_config.json"  # CLIP's forward takes no token_type_ids
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()),
                                       "model_input_names": ["input_ids", "attention_mask"]}), encoding="utf-8")
    vocab = (directory / "vocab.txt").read_text(encoding="utf-8").split("\n")[:-1]
    text = dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=2, max_position_embeddings=64, pad_token_id=vocab.index("[PAD]"),
                bos_token_id=vocab.index("[CLS]"), eos_token_id=vocab.index("[SEP]"))  # pooled at [SEP]
    vision = dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=2)
    text.update(text_sizes or {})
    vision.update(vision_sizes or {})
    torch.manual_seed(seed)
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=projection_dim))
    model.eval().save_pretrained(directory)
    side = vision["image_size"]
    CLIPImageProcessor(size={"shortest_edge": side}, crop_size={"height": side, "width": side}).save_pretrained(directory)
    return directory


# Whisper's special tokens, in Whisper's order after <|endoftext|> (languages trimmed to two).
WHISPER_SPECIALS = ("<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|fr|>", "<|translate|>", "<|transcribe|>",
                    "<|startoflm|>", "<|startofprev|>", "<|nocaptions|>", "<|notimestamps|>")


def build_tiny_whisper_model(directory: Path, *, seed: int = 0, max_target_positions: int = 64, d_model: int = 32,
                             layers: int = 2, heads: int = 2, ffn: int = 64) -> Path:
    """Save a tiny random Whisper (2+2 layers, width 32, 80 mel bins; bench/speech_bench.py passes
    whisper-tiny's sizes) with a byte-level BPE tokenizer (256 byte tokens, no merges, Whisper's
    special tokens, then the 1501 timestamp tokens <|0.00|> .. <|30.00|> as whisper-tiny has them),
    its feature extractor and a generation config like whisper-tiny's: language detected,
    transcription, no timestamps unless asked, the first timestamp at most 1 s in.

    The timestamp tokens' (tied) embeddings are scaled down: each then scores below the best text
    token, so decoding without timestamps yields text as a real checkpoint does, while their summed
    probability (1501 tokens against ~270) still wins WhisperTimeStampLogitsProcessor's rule, so
    decoding with timestamps really produces them (tests/functions/test_speech.py asserts both)."""
    import torch
    from tokenizers import AddedToken, Tokenizer, decoders, pre_tokenizers
    from tokenizers.models import BPE
    from transformers import (GenerationConfig, WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration,
                              WhisperTokenizerFast)
    from transformers.models.gpt2.tokenization_gpt2 import bytes_to_unicode

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    vocab = {ch: i for i, ch in enumerate(bytes_to_unicode().values())}
    tok = Tokenizer(BPE(vocab, [], unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in WHISPER_SPECIALS])
    # Timestamps are added tokens but not special ones, as in whisper-tiny's tokenizer.json.
    tok.add_tokens([AddedToken(f"<|{i * 0.02:.2f}|>", special=False, normalized=False) for i in range(1501)])
    ids = {s: tok.token_to_id(s) for s in WHISPER_SPECIALS}
    eot, sot = ids["<|endoftext|>"], ids["<|startoftranscript|>"]
    tokenizer = WhisperTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                     unk_token="<|endoftext|>", pad_token="<|endoftext|>",
                                     additional_special_tokens=list(WHISPER_SPECIALS[1:]))
    tokenizer.save_pretrained(directory)
    WhisperFeatureExtractor(feature_size=80).save_pretrained(directory)
    config = WhisperConfig(vocab_size=tok.get_vocab_size(), num_mel_bins=80, d_model=d_model, encoder_layers=layers,
                           decoder_layers=layers, encoder_attention_heads=heads, decoder_attention_heads=heads,
                           encoder_ffn_dim=ffn, decoder_ffn_dim=ffn, max_source_positions=1500,
                           max_target_positions=max_target_positions, pad_token_id=eot, bos_token_id=eot,
                           eos_token_id=eot, decoder_start_token_id=sot, begin_suppress_tokens=None, dropout=0.0)
    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(config).eval()
    with torch.no_grad():
        model.get_input_embeddings().weight[ids["<|notimestamps|>"] + 1:] *= 0.1
    model.save_pretrained(directory)
    generation = GenerationConfig(
        decoder_start_token_id=sot, bos_token_id=eot, eos_token_id=eot, pad_token_id=eot,
        max_length=max_target_positions, begin_suppress_tokens=[220, eot],
        suppress_tokens=[1, 2, 7, 8, 9, 10, 14, 25, 26, 27, 28, 29, 31],
        no_timestamps_token_id=ids["<|notimestamps|>"], is_multilingual=True, max_initial_timestamp_index=50,
        lang_to_id={"<|en|>": ids["<|en|>"], "<|fr|>": ids["<|fr|>"]},
        task_to_id={"transcribe": ids["<|transcribe|>"], "translate": ids["<|translate|>"]},
        # As whisper-tiny's: the language is left open (detected), the task is transcription.
        forced_decoder_ids=[[1, None], [2, ids["<|transcribe|>"]]],
    )
    generation.save_pretrained(directory)
    return directory
