#!/usr/bin/env bash
# demo.sh LORATUNE MODEL - what `make demo` shows: the machine, the model, and generation
# (greedy chat answers, then a seeded sampled story) from SmolLM2-135M-Instruct.
set -euo pipefail
lt=$1
model=$2
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "loratune info"
"$lt" info
say "loratune inspect $model"
"$lt" inspect "$model"
for q in "What is the capital of France?" \
         "Write a SQL query that counts the rows of the table users." \
         "Name three fruits."; do
  say "loratune generate --chat \"$q\" --temp 0"
  "$lt" generate --model "$model" --chat "$q" --temp 0 --max-tokens 96
done
say "loratune generate --prompt \"Once upon a time\" --temp 0.8 --top-p 0.95 --seed 42"
"$lt" generate --model "$model" --prompt "Once upon a time" --temp 0.8 --top-p 0.95 --seed 42 --max-tokens 80
