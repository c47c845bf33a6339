# maskwatch: `make demo` runs the real pipeline on real footage; `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
SHARED ?= ../shared
BIN := $(VENV)/bin
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
DEMO_DIR ?= demo-out
TRAIN_VENV ?= .venv-train

.PHONY: setup system-deps demo test lint bench bench-tflite model edgetpu eval-model eval-tracking deb deb-all clean \
  docs docs-image image image-deps test-image

# Debian / Raspberry Pi OS packages the project needs: a broker for the demo and the tests,
# its clients to watch messages, venv support, debootstrap for the package test.
system-deps:
	@command -v mosquitto >/dev/null && command -v mosquitto_sub >/dev/null \
	  && { command -v debootstrap >/dev/null || [ -x /usr/sbin/debootstrap ]; } \
	  && $(PYTHON) -c 'import venv, ensurepip' 2>/dev/null \
	  || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq mosquitto mosquitto-clients python3-venv debootstrap; }

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[litert,dev]'
	touch $@

setup: system-deps $(BIN)/.installed

# PETS 2009 street footage from Debian's opencv-doc package (only vtest.avi is extracted).
$(DEMO_DIR)/vtest.avi:
	mkdir -p $(DEMO_DIR)/deb
	cd $(DEMO_DIR)/deb && apt-get download opencv-doc
	dpkg-deb --fsys-tarfile $(DEMO_DIR)/deb/opencv-doc_*.deb \
	  | tar -x -O ./usr/share/doc/opencv-doc/examples/data/vtest.avi > $@
	rm -rf $(DEMO_DIR)/deb

demo: setup $(DEMO_DIR)/vtest.avi
	$(BIN)/python -m edge.tools.demo --video $(DEMO_DIR)/vtest.avi --config configs/street-camera.yaml \
	  --annotate $(DEMO_DIR)/annotated.mp4

test: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check edge tests models packaging setup.py
	$(BIN)/mypy edge tests models packaging setup.py

# `make bench BENCH_ARGS="--json --video CLIP --detect-every 2 --motion"`; a one-hour memory soak:
# `make bench BENCH_ARGS="--soak-hours 1"` (see BENCHMARKS.md).
BENCH_ARGS ?=
bench: setup
	$(BIN)/python -m edge.tools.bench $(BENCH_ARGS)

# The same bench under tflite-runtime 2.14, the interpreter Coral's Edge TPU delegate is built
# against, in a venv of its own: it needs numpy<2 and has no wheels past Python 3.11.
TFLITE_VENV ?= .venv-tflite
$(TFLITE_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(TFLITE_VENV)
	$(TFLITE_VENV)/bin/pip install -q --upgrade pip
	$(TFLITE_VENV)/bin/pip install -q -e '.[tflite]'
	touch $@

bench-tflite: system-deps $(TFLITE_VENV)/.installed
	$(TFLITE_VENV)/bin/python -m edge.tools.bench --runtime tflite_runtime --frames 100 $(BENCH_ARGS)

# The configuration reference and the JSON schema, generated from the config models
# (tests/test_docs.py fails while the committed files differ from what the code generates).
docs: setup
	$(BIN)/python -m edge config-reference > docs/configuration.md.tmp
	mv docs/configuration.md.tmp docs/configuration.md
	$(BIN)/python -m edge config-schema > docs/config-schema.json.tmp
	mv docs/config-schema.json.tmp docs/config-schema.json

# The README's illustration: one frame of Intel's one-by-one clip (../shared, CC BY 4.0) annotated
# by `maskwatch replay --snapshot`, shrunk to 640 px wide. Port 1 has no broker: the replay
# publishes nothing, says so and exits 75 (EX_TEMPFAIL), leaving its events in a throwaway
# state directory.
SNAPSHOT_FRAME ?= 800
docs-image: setup
	tmp=$$(mktemp -d) && \
	{ $(BIN)/python -m edge replay $(SHARED)/videos/one-by-one-person-detection.mp4 \
	  --mqtt-host 127.0.0.1 --mqtt-port 1 --state-dir $$tmp/state --drain-timeout 0 \
	  --snapshot $$tmp/frame.png --snapshot-frame $(SNAPSHOT_FRAME); \
	  status=$$?; [ $$status = 0 ] || [ $$status = 75 ]; } && \
	$(BIN)/python -c 'import cv2, sys; im = cv2.imread(sys.argv[1]); h, w = im.shape[:2]; \
	  small = cv2.resize(im, (640, round(h * 640 / w)), interpolation=cv2.INTER_AREA); \
	  sys.exit(not cv2.imwrite(sys.argv[2], small, [cv2.IMWRITE_PNG_COMPRESSION, 9]))' \
	  $$tmp/frame.png docs/annotated-frame.png; \
	status=$$?; rm -rf $$tmp; exit $$status

# Rebuild the committed model from ../shared on a CPU-only machine (see models/MODEL_CARD.md).
$(TRAIN_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(TRAIN_VENV)
	$(TRAIN_VENV)/bin/pip install -q -e '.[train,litert]'
	touch $@

# Seven stages at 320 px, each resumable: 20 epochs from ImageNet on the photos and the
# one-by-one clip, a 12-epoch fine-tune adding the classroom clip, unmasked-face photos 3x,
# 30 % mosaics; then 12 epochs over every source labelled by models/training/headlabels.py
# (models/training/labels/), heads of unknown label, 25 % views zoomed onto one head. Then
# only some levels learn, each stage's export grafted onto the one before so the rest stays
# bit-identical (models/training/graft.py): stride 32 and 64 on 60 % zoomed views, then
# stride 64 alone on heads zoomed to 160-320 px (its last epoch), then the stride 8, 16 and
# 32 levels on 40 % zoomed views (the stride-64 level re-exported untrained with them, so
# both outputs take the new export's ranges); then the same three levels again at half the
# rate, of which only the stride-32 one is kept (the other two moved the small-head counts).
LABELLED ?= hardhat-heads,carpark-frames,street-masks-229,one-by-one-person-detection.mp4,classroom.gif,face-mask-853
# Stages 6 and 7: the stride 8, 16 and 32 levels on every labelled source, 40 % zoomed views.
SMALL_LEVELS = --train-levels 0,1,2 --epochs 12 --clips "" --labelled $(LABELLED) \
  --labelled-per-epoch 700 --no-mask-repeat 2 --mosaic 0.2 --zoom 0.4 --zoom-unmasked 0.2 \
  --zoom-backs 0.3 --eval-every 2
STAGE4 = --train-levels 2,3 --epochs 24 --lr 1e-3 --clips "" --labelled $(LABELLED) \
  --labelled-per-epoch 700 --no-mask-repeat 2 --mosaic 0.2 --zoom 0.6 --zoom-unmasked 0.2 \
  --zoom-backs 0.3 --eval-every 4
STAGE5 = --train-levels 3 --epochs 12 --lr 5e-4 --clips "" --labelled $(LABELLED) \
  --labelled-per-epoch 700 --no-mask-repeat 2 --mosaic 0.2 --zoom 0.6 --zoom-px 160,320 \
  --zoom-unmasked 0.2 --zoom-backs 0.3 --eval-every 4
RUNS = models/training/runs
# A comma inside a $(call) argument (the levels to graft).
comma := ,
# A stage from an earlier int8 export: $(1) the stage's name, $(2) that export, $(3) its own
# training arguments; its $(4) weights (best or last epoch) exported and the levels $(5)
# grafted onto $(2) as $(6).
define graft_stage
	$(TRAIN_VENV)/bin/python -m models.training.train --shared $(SHARED) --size 320 \
	  --run $(RUNS)/$(1) --init-tflite $(2) $(3)
	$(TRAIN_VENV)/bin/python -m models.training.export --shared $(SHARED) \
	  --weights $(RUNS)/$(1)/$(4).weights.h5 --out $(RUNS)/$(1).tflite
	$(TRAIN_VENV)/bin/python -m models.training.graft \
	  --base $(2) --new $(RUNS)/$(1).tflite --levels $(5) --out $(6)
endef
model: $(TRAIN_VENV)/.installed
	$(TRAIN_VENV)/bin/python -m models.training.train --shared $(SHARED) --size 320 \
	  --run $(RUNS)/main
	$(TRAIN_VENV)/bin/python -m models.training.train --shared $(SHARED) --size 320 \
	  --run $(RUNS)/stage2 --init $(RUNS)/main/best.weights.h5 \
	  --epochs 12 --lr 5e-4 --clips one-by-one-person-detection.mp4,classroom.gif \
	  --no-mask-repeat 3 --mosaic 0.3
	$(TRAIN_VENV)/bin/python -m models.training.train --shared $(SHARED) --size 320 \
	  --run $(RUNS)/stage3 --init $(RUNS)/stage2/best.weights.h5 \
	  --epochs 12 --lr 5e-4 --clips "" --labelled $(LABELLED) --labelled-per-epoch 700 \
	  --no-mask-repeat 2 --mosaic 0.2 --zoom 0.25
	$(TRAIN_VENV)/bin/python -m models.training.export --shared $(SHARED) \
	  --weights $(RUNS)/stage3/best.weights.h5 --out $(RUNS)/stage3.tflite
	$(call graft_stage,stage4,$(RUNS)/stage3.tflite,$(STAGE4),best,2$(comma)3,$(RUNS)/stage4-grafted.tflite)
	$(call graft_stage,stage5,$(RUNS)/stage4-grafted.tflite,$(STAGE5),last,3,$(RUNS)/stage5-grafted.tflite)
	$(call graft_stage,stage6,$(RUNS)/stage5-grafted.tflite,--lr 1e-3 $(SMALL_LEVELS),best,0$(comma)1$(comma)2$(comma)3,$(RUNS)/stage6-grafted.tflite)
	$(call graft_stage,stage7,$(RUNS)/stage6-grafted.tflite,--lr 5e-4 $(SMALL_LEVELS),best,2,models/head_detector_int8.tflite)

edgetpu:
	@command -v edgetpu_compiler >/dev/null || { echo "edgetpu_compiler is not installed (Coral's apt repository, x86-64 only)"; exit 1; }
	edgetpu_compiler -s -o models models/head_detector_int8.tflite

eval-model: setup
	$(BIN)/python -m models.training.evaluate --shared $(SHARED)

# The tracker against MOTChallenge and peers, then end-to-end counting on PETS09. Harder copies of
# the sequences: `python -m edge.tools.mot_variants OUT_DIR`, then
# `python -m edge.tools.eval_tracking --no-peers --data OUT_DIR`.
eval-tracking: setup
	$(BIN)/pip install -q -e '.[eval]' && $(BIN)/pip install -q --no-deps norfair==2.3.0
	@# A peer tracker pulls opencv-python, whose cv2 overwrites the headless one the runtime uses
	@# (and then fails to import): take it out and put the headless files back.
	if $(BIN)/pip show -q opencv-python 2>/dev/null; then $(BIN)/pip uninstall -q -y opencv-python && \
	  $(BIN)/pip install -q --force-reinstall --no-deps \
	  "opencv-python-headless==$$($(BIN)/pip show opencv-python-headless | sed -n 's/^Version: //p')"; fi
	$(BIN)/python -m edge.tools.eval_tracking --variants clean noisy clean-noisy heads crowd \
		crowd-close crowd-apart pan clean-pan
	$(BIN)/python -m edge.tools.eval_video --config configs/street-camera.yaml --starts 4

# Debian package for bookworm / Raspberry Pi OS: dist/maskwatch_<version>_<arch>.deb with the
# Python dependencies bundled for that arch (packaging/build_deb.py). ARCH=amd64 or arm64.
ARCH ?= $(shell dpkg --print-architecture 2>/dev/null || echo amd64)

deb: setup
	$(BIN)/python packaging/build_deb.py --arch $(ARCH) --out dist

deb-all: setup
	$(BIN)/python packaging/build_deb.py --arch amd64 --out dist
	$(BIN)/python packaging/build_deb.py --arch arm64 --out dist

# Raspberry Pi SD-card image: dist/maskwatch-<version>-rpi-arm64.img.xz (Debian bookworm arm64,
# the arm64 .deb installed; packaging/image/build_image.py). Root, Debian's packages only; the
# uncompressed image stays in build/image for `make test-image`.
image-deps:
	@command -v mmdebstrap >/dev/null && command -v mcopy >/dev/null && command -v mkfs.vfat >/dev/null \
	  && [ -e /usr/libexec/qemu-binfmt/aarch64-binfmt-P ] && command -v qemu-system-aarch64 >/dev/null \
	  && command -v sfdisk >/dev/null && command -v ssh >/dev/null \
	  || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq --no-install-recommends \
	    mmdebstrap qemu-user-static binfmt-support arch-test dosfstools mtools fdisk xz-utils \
	    qemu-system-arm openssh-client openssl; }

image: setup image-deps
	$(SUDO) $(BIN)/python packaging/image/build_image.py --out dist --work build/image

# Boots the image in qemu-system-aarch64 (TCG) against a real broker (tests/test_image_vm.py).
test-image: image
	MASKWATCH_IMAGE=$$(ls -t build/image/maskwatch-*-rpi-arm64.img | head -1) \
	  $(BIN)/python -m pytest -q -s tests/test_image_vm.py

clean:
	rm -rf $(DEMO_DIR) build dist *.egg-info
