#!/usr/bin/env bash
# make-sample.sh DIR : makes DIR/sample.mp4 when DIR has no video yet.
# The sample is generated here, not downloaded: 60 s of ffmpeg's `testsrc2`
# test pattern with a 440 Hz tone, H.264 + AAC, a keyframe every second
# (so seeking is quick) and `+faststart` (so playback starts before the
# whole file has arrived).
set -euo pipefail
dir=${1:-media}
mkdir -p "$dir"
# A half-written sample from an interrupted run is not a video.
rm -f "$dir/sample.mp4.tmp.mp4"
if find "$dir" -maxdepth 2 -type f \( -name '*.mp4' -o -name '*.webm' -o -name '*.mkv' \) | grep -q .; then
  exit 0
fi
"$(dirname "$0")/ensure-packages.sh" ffmpeg:ffmpeg
echo "making $dir/sample.mp4 (ffmpeg testsrc2 pattern, 60 s, H.264, +faststart)" >&2
ffmpeg -hide_banner -loglevel error -y \
  -f lavfi -i "testsrc2=size=1280x720:rate=30:duration=60" \
  -f lavfi -i "sine=frequency=440:sample_rate=48000:duration=60" \
  -c:v libx264 -preset veryfast -profile:v high -pix_fmt yuv420p -g 30 -keyint_min 30 -b:v 2M \
  -c:a aac -b:a 96k -shortest -movflags +faststart \
  "$dir/sample.mp4.tmp.mp4"
mv "$dir/sample.mp4.tmp.mp4" "$dir/sample.mp4"
ls -l "$dir/sample.mp4" >&2
