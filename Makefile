# b2c: the front door. `make run` and `make test` work on a fresh Debian
# machine: they install what is missing first.

CARGO ?= cargo
# The architecture `make initramfs` and `make run` build and boot: x86_64,
# or aarch64 (cross-built, booted with qemu-system-aarch64). `make kernel`
# builds both unless ARCH=… is on the command line.
ARCH ?= x86_64
MUSL_TARGETS := x86_64-unknown-linux-musl aarch64-unknown-linux-musl
S3S_FS_VERSION := 0.14.1
S3S_FS := $(HOME)/.cargo/bin/s3s-fs
# Debian packages the build, the QEMU boot, the tests and the bench need
# (rclone: the bench's comparison for volume syncs; gcc, make, libc6-dev,
# dpkg-dev and python3: crun, built from Debian's source package, static).
DEB_PACKAGES := qemu-system-x86 docker-registry skopeo dnsmasq-base chrony \
	cpio busybox-static e2fsprogs kmod musl-tools iproute2 openssl xz-utils zstd \
	ca-certificates qemu-utils fdisk iptables apache2-utils ipxe-qemu seabios \
	pxelinux syslinux-common podman nfs-ganesha nfs-ganesha-vfs rpcbind nbd-server \
	rclone gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-system-arm \
	gcc make libc6-dev dpkg-dev python3
# What `make kernel` needs: Debian's kernel source (the stock kernel's
# version, with Debian's patches; 130 MB, so not in `make deps`), the
# kernel build's tools and the arm64 cross compiler. Not `make deps`'s
# whole list (and its S3 server build): a kernel needs none of it.
KERNEL_DEB_PACKAGES := linux-source bc bison flex libelf-dev libssl-dev make gcc xz-utils \
	gcc-aarch64-linux-gnu
# The demo container of `make run`: a busybox image the test network builds
# and serves from its registry at 10.99.0.1:5000.
# Exported, and used quoted, so that no shell on the way reads its quotes
# or its $(...): the container's shell does.
export DEMO_APPEND ?= b2c.run="--tls-verify=false docker://10.99.0.1:5000/b2c/busybox:latest sh -c 'echo Hello from a container on $$(hostname), the time is $$(date)'"

# The arm64 QEMU tests (qemu-system-aarch64 under TCG, B2C_ARCH=aarch64):
# `make test` boots hello and the cache partition on arm64 too;
# `make test-arm64` adds HTTPS and a whole pipeline.
ARM64_TESTS := --test suite -- --exact e2e::hello \
	cache::auto_cache_survives_reboots_and_registry_outages
ARM64_ALL_TESTS := --test suite -- --exact e2e::hello \
	e2e::https_with_the_test_ca cache::auto_cache_survives_reboots_and_registry_outages \
	pipeline::boot2container_pipeline_semantics

.PHONY: all deps deps-kernel kernel initramfs firmware run test unit e2e e2e-suite e2e-harness \
	e2e-arm64 test-arm64 \
	test-kernel soak bench lint clean kernel-x86_64 kernel-aarch64 kernel-debian-x86_64 \
	kernel-debian-aarch64 initramfs-x86_64 initramfs-aarch64

all: initramfs

# Installs the Debian packages of $(1) that are missing.
define install_debs
	@missing=$$(for p in $(1); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing:" $$missing; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi
endef

deps:
	$(call install_debs,$(DEB_PACKAGES))
	@apt-cache show linux-image-amd64 >/dev/null 2>&1 || apt-get update -q
	@for t in $(MUSL_TARGETS); do rustup target list --installed | grep -qx $$t || rustup target add $$t; done
	@# The S3 server of the volume tests (storage and QEMU): a real one that
	@# checks SigV4, pinned (0.14.1 is the last to build with rustc 1.95).
	@# Optimised less than a release: 2.5 min to build instead of about 5
	@# (once per machine), and still far faster than the tests need.
	@$(S3S_FS) --version 2>/dev/null | grep -q ' $(S3S_FS_VERSION)$$' || \
		CARGO_PROFILE_RELEASE_OPT_LEVEL=1 $(CARGO) install s3s-fs --version $(S3S_FS_VERSION) --features binary --locked

deps-kernel:
	$(call install_debs,$(KERNEL_DEB_PACKAGES))

# Our kernel, every driver b2c needs built in (kernel-config/), into
# target/own-kernel/ARCH/: both architectures, or the one ARCH=… names on
# the command line. Many minutes each (README: Building our kernel).
ifeq ($(origin ARCH),command line)
kernel: kernel-$(ARCH)
else
kernel: kernel-x86_64 kernel-aarch64
endif

initramfs: initramfs-$(ARCH)

kernel-x86_64 kernel-aarch64: kernel-%: deps-kernel
	$(CARGO) xtask kernel --arch $*

# Debian's stock kernel, whose modules the initramfs ships and which the
# QEMU tests boot: target/kernel/, target/kernel-aarch64/.
kernel-debian-x86_64 kernel-debian-aarch64: kernel-debian-%: deps
	$(CARGO) xtask kernel --debian --arch $*

# target/initramfs/b2c.cpio.zst, target/initramfs/aarch64/b2c.cpio.zst
initramfs-x86_64 initramfs-aarch64: initramfs-%: kernel-debian-%
	$(CARGO) xtask initramfs --arch $*

# The drivers' firmware (Debian's non-free-firmware), as a second archive
# for the boot loader: target/initramfs/b2c-firmware.cpio.zst (x86_64's
# drivers).
firmware: kernel-debian-x86_64
	$(CARGO) xtask firmware

run: initramfs
	$(CARGO) xtask qemu --arch $(ARCH) -- "$$DEMO_APPEND"

unit: deps
	$(CARGO) test --workspace --exclude qemu-tests

# The QEMU tests: the suite of boots, and the harness's own tests (test
# networks, no kernel, no boot: about a minute) with its doc tests.
e2e: e2e-suite e2e-harness

e2e-suite: initramfs-x86_64 firmware
	$(CARGO) test -p qemu-tests --test suite -- --test-threads=2

e2e-harness: deps
	$(CARGO) test -p qemu-tests --lib
	$(CARGO) test -p qemu-tests --doc

e2e-arm64: initramfs-aarch64
	B2C_ARCH=aarch64 $(CARGO) test -p qemu-tests $(ARM64_TESTS)

# The x86_64 QEMU suite leaves about half of the machine idle (its boots
# wait on timers and servers): the arm64 part (its cross builds, then its
# boots) and the harness's own tests run beside it, off its critical path.
test: unit
	$(MAKE) -j3 e2e-suite e2e-harness e2e-arm64

# Every arm64 QEMU test of the subset (README: Testing); not part of
# `make test`, for its time budget.
test-arm64: initramfs-aarch64
	B2C_ARCH=aarch64 $(CARGO) test -p qemu-tests $(ARM64_ALL_TESTS)

# Our kernel (built first when missing or when the fragments changed,
# incrementally) booted with an initramfs without modules: hello, then the
# cache on NVMe with an fscrypt volume and the watchdog; x86_64, then arm64.
# Not part of `make test`: a first build of both kernels takes long.
test-kernel: kernel
	$(CARGO) test -p qemu-tests --test suite -- --nocapture own_kernel::
	B2C_ARCH=aarch64 $(CARGO) test -p qemu-tests --test suite -- --nocapture own_kernel::

# 30 boots on one cache disk, a third of them cut off at a random moment
# (qemu-tests/tests/suite/soak.rs); not part of `make test`.
soak: initramfs-x86_64
	$(CARGO) test -p qemu-tests --test suite -- --ignored --nocapture soak::

# b2c against podman, skopeo+umoci, tar, a busybox script and a static
# init; installs what it needs; writes target/bench/results.{md,json}.
bench: deps
	$(CARGO) xtask bench

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

clean:
	$(CARGO) clean
