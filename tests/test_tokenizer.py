"The from-scratch BPE against `tokenizers`, and the course chat template with TRL's assistant-only loss."
import json
import pytest
import torch
from ft_course.data import pretraining_corpus, instruction_dataset, to_messages
from ft_course.tokenizer import (EOS, PAD, MASK, ROLE_TOKENS, CHAT_TEMPLATE, bpe_train, bpe_encode, pretokenize,
                                 train_tokenizer)
from ft_course.models import load_base
from ft_course.sft import tokenize_dataset, SFTCollator

SPECIALS = [EOS, PAD, MASK, *ROLE_TOKENS]

@pytest.mark.parametrize("n_docs,vocab", [(20, 300), (150, 420)])
def test_bpe_matches_tokenizers(n_docs, vocab):
    "Same merges in the same order, same vocabulary and ids, same encoding (seen and unseen text)."
    texts = pretraining_corpus(n_docs)
    ids, merges = bpe_train(texts, vocab, SPECIALS)
    hf = train_tokenizer(texts, vocab)
    model = json.loads(hf.backend_tokenizer.to_str())['model']
    assert merges == [tuple(m) for m in model['merges']]
    assert ids == model['vocab']
    unseen = pretraining_corpus(30, seed=1) + ["Ünïcode, digits 123 and 🍕\n  spaces"]
    for t in texts[:20] + unseen:
        assert bpe_encode(t, ids, merges) == hf(t, add_special_tokens=False)['input_ids'], t

def test_pretokenize_spaces_are_G():
    assert pretokenize("The chef cooks.") == ['The', 'Ġchef', 'Ġcooks', '.']
    assert pretokenize("a\nb") == ['a', 'Ċ', 'b']

@pytest.fixture(scope="module")
def base():
    return load_base()

MSGS = [dict(role='user', content='Negate the sentence.\n\nThe chef cooks the meal.'),
        dict(role='assistant', content='The chef does not cook the meal.'),
        dict(role='user', content='Put it in the past tense.'),
        dict(role='assistant', content='The chef cooked the meal.')]

def test_shipped_template_is_the_course_template(base):
    _, tok = base
    assert tok.chat_template == CHAT_TEMPLATE
    assert '{% generation %}' in CHAT_TEMPLATE

def test_rendered_text_unchanged(base):
    "The generation markers render nothing: the text is byte-identical to the template without them."
    _, tok = base
    old = ("<|user|>Negate the sentence.\n\nThe chef cooks the meal.\n<|assistant|>The chef does not cook the meal.<|endoftext|>"
           "<|user|>Put it in the past tense.\n<|assistant|>The chef cooked the meal.<|endoftext|>")
    assert tok.apply_chat_template(MSGS, tokenize=False) == old
    assert tok.apply_chat_template(MSGS[:1], tokenize=False, add_generation_prompt=True) == \
        "<|user|>Negate the sentence.\n\nThe chef cooks the meal.\n<|assistant|>"

def test_assistant_mask_marks_answers_and_eos(base):
    _, tok = base
    out = tok.apply_chat_template(MSGS, return_assistant_tokens_mask=True, return_dict=True)
    marked = [i for i, m in zip(out['input_ids'], out['assistant_masks']) if m]
    want = sum((tok(m['content'] + EOS, add_special_tokens=False)['input_ids'] for m in MSGS if m['role'] == 'assistant'), [])
    assert marked == want
    assert sum(out['assistant_masks']) == len(want) and out['assistant_masks'][-1] == 1   # the last EOS is learned
    role = tok.convert_tokens_to_ids('<|assistant|>')
    assert all(m == 0 for i, m in zip(out['input_ids'], out['assistant_masks']) if i == role)

def test_trl_assistant_only_loss_equals_ours(base, tmp_path):
    "TRL's assistant_only_loss on {'messages'} rows builds the same ids and loss mask as ft_course's template='chat'."
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer
    model, tok = base
    rows = instruction_dataset()['train'].select(range(8))
    conv = Dataset.from_list([dict(messages=to_messages(r)) for r in rows])
    cfg = SFTConfig(output_dir=str(tmp_path), assistant_only_loss=True, max_length=model.config.n_positions,
                    per_device_train_batch_size=4, bf16=False, use_cpu=True, report_to='none', save_strategy='no',
                    max_steps=1)
    trainer = SFTTrainer(model=model, args=cfg, train_dataset=conv, processing_class=tok)
    assert trainer.chat_template is None            # TRL found our markers and did not swap in its own template
    ours = tokenize_dataset(rows, tok, template='chat')
    assert trainer.train_dataset['input_ids'] == ours['input_ids']
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    ref = SFTCollator(tok.pad_token_id)(ours.select(range(4)).to_list())
    assert torch.equal(batch['input_ids'], ref['input_ids'])
    assert torch.equal(batch['labels'], ref['labels'])
    assert (batch['labels'] == tok.eos_token_id).sum() == 4       # every answer's EOS is a label
