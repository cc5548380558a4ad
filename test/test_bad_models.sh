#!/usr/bin/env bash
# test/test_bad_models.sh: broken model directories, as a user meets them through
# ./train_cpu and ./merge (the sanitizer builds, so a memory error or undefined behaviour
# changes the exit status and fails the check).
#
# Every directory below is the committed tiny model test/fixtures/tiny/mistral_gqa (hidden
# 48, 6 heads of head_dim 8, 2 KV heads, 2 layers, vocabulary 64) with one thing broken,
# built here with the `safetensors` package and raw bytes:
#   config.json   a size missing, heads not dividing hidden_size, KV heads not dividing the
#                 heads, head_dim disagreeing with the weights or odd, sizes whose products
#                 overflow, more layers than the file has, a vocabulary the embeddings lack;
#   safetensors   data offsets past the end, overlapping ranges, a span that does not match
#                 dtype x shape, a wrong dtype or a transposed shape for one weight, a header
#                 length larger than the file or absurdly huge, a truncated file;
#   sharded       an index naming a shard that is not there, a tensor mapped to a shard that
#                 lacks it, a tensor the config needs that no shard holds, an index that is
#                 not JSON, a tensor in two shards.
# Each must be refused by both programs with exit status 1 and one line naming the file
# (config.json, the .safetensors file or the index) and the field or tensor at fault.
set -u
cd "$(dirname "$0")/.."
. test/lib.sh
: "${SAN_BIN:?}" "${PYTHON:?}"
FX=test/fixtures/tiny/mistral_gqa
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

"$PYTHON" - "$FX" "$tmp" <<'PY'
import json, os, shutil, struct, sys
from safetensors.numpy import load_file, save_file

fx, out = sys.argv[1:]
config = json.load(open(f"{fx}/config.json"))
tensors = load_file(f"{fx}/model.safetensors")

def model_dir(name, cfg=None):
    d = f"{out}/{name}"
    os.makedirs(d)
    json.dump(cfg if cfg is not None else config, open(f"{d}/config.json", "w"), indent=1)
    return d

def with_config(name, **changes):  # a value None removes the field
    cfg = {k: v for k, v in {**config, **changes}.items() if not (k in changes and changes[k] is None)}
    shutil.copy(f"{fx}/model.safetensors", model_dir(name, cfg))

def read_raw(path):
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    return json.loads(raw[8:8 + n]), raw[8 + n:]

def write_raw(path, header, data, header_len=None):
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text) if header_len is None else header_len) + text + data)

def with_header(name, edit, header_len=None, data_len=None):  # edit(header) changes it in place
    header, data = read_raw(f"{fx}/model.safetensors")
    edit(header)
    write_raw(f"{model_dir(name)}/model.safetensors", header, data if data_len is None else data[:data_len],
              header_len)

def by_offset(header):  # the tensor names in the order of their data
    return sorted((k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"][0])

# config.json
with_config("config_no_hidden_size", hidden_size=None)
with_config("config_heads_not_dividing_hidden", num_attention_heads=5, head_dim=None)
with_config("config_kv_not_dividing_heads", num_key_value_heads=4)
with_config("config_head_dim_disagrees_with_weights", head_dim=16)
with_config("config_head_dim_odd", head_dim=7)
with_config("config_head_dim_overflows", head_dim=1000000000)
with_config("config_too_many_layers", num_hidden_layers=3)
with_config("config_absurd_layers", num_hidden_layers=1000000000)
with_config("config_vocab_too_large", vocab_size=65)
with_config("config_not_json")
open(f"{out}/config_not_json/config.json", "w").write('{"model_type": "mistral", ')
model_dir("config_missing")
os.remove(f"{out}/config_missing/config.json")
shutil.copy(f"{fx}/model.safetensors", f"{out}/config_missing/")

# single safetensors files with lying headers
def past_end(h):  # the last tensor in the file moved 4 bytes on, its span still right
    last = by_offset(h)[-1]
    h[last]["data_offsets"] = [o + 4 for o in h[last]["data_offsets"]]
with_header("st_offsets_past_end", past_end)
with_header("st_offsets_absurd", lambda h: h["model.norm.weight"]["data_offsets"].__setitem__(1, 10**15))
def overlap(h):  # the second tensor in the file starts 4 bytes early, its span still right
    second = by_offset(h)[1]
    h[second]["data_offsets"] = [o - 4 for o in h[second]["data_offsets"]]
with_header("st_overlapping_ranges", overlap)
with_header("st_span_not_dtype_times_shape", lambda h: h["model.layers.1.self_attn.k_proj.weight"].__setitem__("dtype", "BF16"))
with_header("st_wrong_dtype", lambda h: h["model.layers.0.mlp.up_proj.weight"].__setitem__("dtype", "I32"))
with_header("st_transposed_shape", lambda h: h["model.layers.1.mlp.down_proj.weight"].__setitem__("shape", [96, 48]))
with_header("st_header_longer_than_file", lambda h: None)
path = f"{out}/st_header_longer_than_file/model.safetensors"
with open(path, "r+b") as f:  # the header claims the whole file and one byte more
    f.write(struct.pack("<Q", os.path.getsize(path) - 7))
with_header("st_header_huge", lambda h: None, header_len=2**63 + 12345)
with_header("st_truncated", lambda h: None, data_len=len(read_raw(f"{fx}/model.safetensors")[1]) - 100)
d = model_dir("st_truncated_in_header")
open(f"{d}/model.safetensors", "wb").write(open(f"{fx}/model.safetensors", "rb").read()[:200])
d = model_dir("st_empty")
open(f"{d}/model.safetensors", "wb").close()

# sharded directories: layer 1 and the head in the second shard
names = sorted(tensors)
second = [k for k in names if k.startswith("model.layers.1.") or k == "lm_head.weight"]
first = [k for k in names if k not in second]
S1, S2 = "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"
def sharded(name, weight_map=None, shard1=first, shard2=second, index_text=None):
    d = model_dir(name)
    save_file({k: tensors[k] for k in shard1}, f"{d}/{S1}", metadata={"format": "pt"})
    save_file({k: tensors[k] for k in shard2}, f"{d}/{S2}", metadata={"format": "pt"})
    if weight_map is None:
        weight_map = {**{k: S1 for k in shard1}, **{k: S2 for k in shard2}}
    index = {"metadata": {"total_size": sum(tensors[k].nbytes for k in names)}, "weight_map": weight_map}
    open(f"{d}/model.safetensors.index.json", "w").write(index_text or json.dumps(index, indent=1))
    return d
sharded("sharded_ok")
os.remove(f"{sharded('sharded_missing_shard')}/{S2}")
wm = {**{k: S1 for k in first}, **{k: S2 for k in second}}
sharded("sharded_tensor_not_in_its_shard", weight_map={**wm, "model.layers.1.mlp.up_proj.weight": S1})
no_head = [k for k in second if k != "lm_head.weight"]
sharded("sharded_tensor_in_no_shard", shard2=no_head, weight_map={k: v for k, v in wm.items() if k != "lm_head.weight"})
sharded("sharded_index_not_json", index_text='{"weight_map": {')
sharded("sharded_tensor_in_two_shards", shard2=second + ["model.norm.weight"])
PY

# refused NAME WANT...: both programs refuse $tmp/NAME with exit status 1 and one line that
# names the directory and contains every WANT.
refused() {
    local name=$1 dir="$tmp/$1"
    shift
    local prog err rc ok
    for prog in train_cpu merge; do
        case $prog in
            train_cpu) err=$("$SAN_BIN/train_cpu" --model "$dir" --train "$tmp/none.bin" --out "$tmp/run" 2>&1 >/dev/null) ;;
            merge) err=$("$SAN_BIN/merge" --model "$dir" --adapter "$FX/adapter" --out "$tmp/merged" 2>&1 >/dev/null) ;;
        esac
        rc=$?
        ok=1
        [ "$rc" -eq 1 ] && [ "$(printf '%s\n' "$err" | wc -l)" -eq 1 ] || ok=0
        for want in "$dir/" "$@"; do [[ "$err" == *"$want"* ]] || ok=0; done
        if [ $ok = 1 ]; then
            echo "PASS ${prog}_refuses_$name"
        else
            echo "FAIL ${prog}_refuses_$name"
            echo "  exit status $rc, stderr: $(printf '%s' "$err" | head -3)"
            echo "  wanted exit status 1 and one line containing: $dir/ $*"
        fi
    done
}

# The sharded copy loads: the checks below fail for the damage, not for the layout.
if "$SAN_BIN/merge" --model "$tmp/sharded_ok" --adapter "$FX/adapter" --out "$tmp/merged_ok" >"$tmp/log" 2>&1; then
    echo "PASS sharded_copy_of_the_model_loads"
else
    echo "FAIL sharded_copy_of_the_model_loads"
    sed 's/^/  /' "$tmp/log" | tail -3
fi

C=config.json ST=model.safetensors IX=model.safetensors.index.json
refused config_no_hidden_size "$C: hidden_size: missing"
refused config_heads_not_dividing_hidden "$C: hidden_size 48 is not a multiple of num_attention_heads 5"
refused config_kv_not_dividing_heads "$C: num_key_value_heads 4 does not divide num_attention_heads 6"
refused config_head_dim_disagrees_with_weights "$ST: tensor 'model.layers.0.self_attn.q_proj.weight' has shape [48, 48], the config implies [96, 48]"
refused config_head_dim_odd "$C: head_dim 7 is odd"
refused config_head_dim_overflows "$C: num_attention_heads x head_dim"
refused config_too_many_layers "$ST: tensor 'model.layers.2.input_layernorm.weight' is missing"
refused config_absurd_layers "$ST: tensor 'model.layers.2.input_layernorm.weight' is missing"
refused config_vocab_too_large "$ST: tensor 'model.embed_tokens.weight' has shape [64, 48], the config implies [65, 48]"
refused config_not_json "$C: not valid JSON"
refused config_missing "$C: cannot open"

refused st_offsets_past_end "$ST: tensor '" "past the" "-byte buffer"
refused st_offsets_absurd "$ST: tensor 'model.norm.weight': data_offsets span"
refused st_overlapping_ranges "$ST: tensor '" "overlap the previous tensor"
refused st_span_not_dtype_times_shape "$ST: tensor 'model.layers.1.self_attn.k_proj.weight': data_offsets span 3072 bytes but BF16 of this shape needs 1536"
refused st_wrong_dtype "$ST: tensor 'model.layers.0.mlp.up_proj.weight' has dtype I32, expected F32, BF16 or F16"
refused st_transposed_shape "$ST: tensor 'model.layers.1.mlp.down_proj.weight' has shape [96, 48], the config implies [48, 96]"
refused st_header_longer_than_file "$ST: header length" "runs past the end"
refused st_header_huge "$ST: header length 9223372036854788153 exceeds the format's limit"
refused st_truncated "$ST: tensor '" "past the" "-byte buffer"
refused st_truncated_in_header "$ST: header length" "runs past the end of the 200-byte file"
refused st_empty "$ST: 0 bytes, too short"

refused sharded_missing_shard "$IX: tensor '" "model-00002-of-00002.safetensors, which does not exist"
refused sharded_tensor_not_in_its_shard "$IX: tensor 'model.layers.1.mlp.up_proj.weight' is mapped to model-00001-of-00002.safetensors, which does not contain it"
refused sharded_tensor_in_no_shard "$IX: tensor 'lm_head.weight' is missing"
refused sharded_index_not_json "$IX: not valid JSON"
refused sharded_tensor_in_two_shards "$IX: tensor 'model.norm.weight' is in two shards, $tmp/sharded_tensor_in_two_shards/model-00001-of-00002.safetensors and $tmp/sharded_tensor_in_two_shards/model-00002-of-00002.safetensors"
