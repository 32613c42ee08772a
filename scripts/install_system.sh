#!/usr/bin/env bash
# Installs the Debian packages timbreclip needs, only those missing (idempotent: a second run is quick).
# As root it calls apt-get directly; otherwise through sudo.
set -euo pipefail
PACKAGES=(
  fluidsynth                     # renders the soundfont patch libraries (training and evaluation data)
  fluid-soundfont-gm fluid-soundfont-gs fluidr3mono-gm-soundfont musescore-general-soundfont opl3-soundfont
  timgm6mb-soundfont csound-soundfont   # the held-out Tim family (test set)
  jackd2 jack-tools libportaudio2        # real audio / MIDI ports without hardware (live loop tests)
  amsynth whysynth hexter calf-plugins   # real synthesizers with named presets (DSSI and LV2 plugins; DX7 voice banks)
  libsndfile1
)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
echo "installing system packages: ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
