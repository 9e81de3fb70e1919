# upgraded — build, install layout, and the two entry points of the README.
#
#   make            build the release binaries
#   make install    install into $(DESTDIR)$(PREFIX) the way a distribution would
#   make deb        build target/debian/upgraded_<version>_amd64.deb (needs dpkg-deb)
#   make demo       the main job: a guest switches kernels while a session keeps running
#   make bench      the blackout benchmark in a guest (SIZES="64 512" for more sizes)
#   make fault-matrix  every fault case of issue 7 in guests (the suite runs a subset)
#   make check      every test: unit tests, then the VM suite (needs root; installs
#                   qemu, mmdebstrap and the test kernels itself)
#   make fuzz       fuzz the manifest reader and the configuration loader,
#                   FUZZ_SECONDS each (needs nightly Rust and cargo-fuzz; docs/fuzzing.md)

PREFIX      ?= /usr
DESTDIR     ?=
CARGO       ?= cargo
BINDIR      := $(PREFIX)/bin
LIBEXECDIR  := $(PREFIX)/libexec/upgraded
UNITDIR     := $(PREFIX)/lib/systemd/system
TMPFILESDIR := $(PREFIX)/lib/tmpfiles.d
DRACUTDIR   := $(PREFIX)/lib/dracut/modules.d
DBUSCONFDIR := $(PREFIX)/share/dbus-1/system.d
DBUSSVCDIR  := $(PREFIX)/share/dbus-1/system-services
MAN1DIR     := $(PREFIX)/share/man/man1
BASHCOMPDIR := $(PREFIX)/share/bash-completion/completions
ZSHCOMPDIR  := $(PREFIX)/share/zsh/vendor-completions
FISHCOMPDIR := $(PREFIX)/share/fish/vendor_completions.d
DOCDIR      := $(PREFIX)/share/doc/upgraded
SYSCONFDIR  ?= /etc
# The VM test bed builds with the fault points of its fault matrix into a target
# directory of its own (tests/vm/image/build-layer sets both); a plain `make` never
# compiles them in.
FEATURES    ?=
TARGET_DIR  ?= target
RELEASE     := $(TARGET_DIR)/release

.PHONY: all build install deb unit-test vm-test check demo bench fault-matrix fuzz clean

all: build

build:
	$(CARGO) build --release --locked --target-dir $(TARGET_DIR) $(if $(FEATURES),--features "$(FEATURES)")

install: build
	install -D -m 0755 $(RELEASE)/upgradectl $(DESTDIR)$(BINDIR)/upgradectl
	install -D -m 0755 $(RELEASE)/upgraded $(DESTDIR)$(LIBEXECDIR)/upgraded
	install -D -m 0755 $(RELEASE)/upgraded-initramfs-hook $(DESTDIR)$(LIBEXECDIR)/initramfs-hook
	install -D -m 0644 systemd/tmpfiles.d/upgraded.conf $(DESTDIR)$(TMPFILESDIR)/upgraded.conf
	for f in $(wildcard systemd/*.service systemd/*.target systemd/*.timer); do \
		install -D -m 0644 $$f $(DESTDIR)$(UNITDIR)/$$(basename $$f) || exit 1; done
	for f in $(wildcard systemd/dbus/*.conf); do \
		install -D -m 0644 $$f $(DESTDIR)$(DBUSCONFDIR)/$$(basename $$f) || exit 1; done
	for f in $(wildcard systemd/dbus/*.service); do \
		install -D -m 0644 $$f $(DESTDIR)$(DBUSSVCDIR)/$$(basename $$f) || exit 1; done
	@# dracut runs module scripts (*.sh) as programs; units and the rest are data.
	for d in $(wildcard dracut/*/); do \
		m=$$(basename $$d); install -d $(DESTDIR)$(DRACUTDIR)/$$m || exit 1; \
		for f in $$d*; do \
			case $$f in *.sh) mode=0755;; *) mode=0644;; esac; \
			install -m $$mode $$f $(DESTDIR)$(DRACUTDIR)/$$m/ || exit 1; done; done
	@# Turns the module on: its check() returns 255, so dracut includes it only on request.
	install -D -m 0644 dracut/90-upgraded.conf $(DESTDIR)$(PREFIX)/lib/dracut/dracut.conf.d/90-upgraded.conf
	@# Man pages and completions come from the CLI definitions of the binary just built.
	@# gzip -n: no name or timestamp in the archive, so the same tree installs the same bytes.
	docs=$$(mktemp -d) && trap 'rm -rf "$$docs"' EXIT && \
	$(RELEASE)/upgradectl internals gen-docs --man "$$docs/man" --completions "$$docs/completions" && \
	install -d $(DESTDIR)$(MAN1DIR) && \
	for f in "$$docs"/man/*.1; do \
		gzip -n -9 "$$f" && install -m 0644 "$$f.gz" $(DESTDIR)$(MAN1DIR)/ || exit 1; done && \
	install -D -m 0644 "$$docs/completions/upgradectl" $(DESTDIR)$(BASHCOMPDIR)/upgradectl && \
	install -D -m 0644 "$$docs/completions/_upgradectl" $(DESTDIR)$(ZSHCOMPDIR)/_upgradectl && \
	install -D -m 0644 "$$docs/completions/upgradectl.fish" $(DESTDIR)$(FISHCOMPDIR)/upgradectl.fish
	install -D -m 0644 crates/upgraded/upgraded.toml.example $(DESTDIR)$(DOCDIR)/upgraded.toml.example
	@# /etc gets the example with every line commented out, so the built-in defaults apply
	@# until the admin uncomments something. An existing file is the admin's: kept.
	@if [ -e $(DESTDIR)$(SYSCONFDIR)/upgraded/upgraded.toml ]; then \
		echo "keeping existing $(DESTDIR)$(SYSCONFDIR)/upgraded/upgraded.toml"; \
	else \
		install -d -m 0755 $(DESTDIR)$(SYSCONFDIR)/upgraded && \
		sed -e '/^[[:space:]]*$$/b' -e '/^[[:space:]]*#/b' -e 's/^/# /' \
			crates/upgraded/upgraded.toml.example >$(DESTDIR)$(SYSCONFDIR)/upgraded/upgraded.toml && \
		chmod 0644 $(DESTDIR)$(SYSCONFDIR)/upgraded/upgraded.toml; \
	fi

deb:
	@packaging/deb/build

unit-test:
	@t=$$(date +%s); $(CARGO) test --workspace --locked && \
		echo "==== unit tests: $$(( $$(date +%s) - t )) s"

vm-test:
	@t=$$(date +%s); tests/vm/run-suite && \
		echo "==== VM suite: $$(( $$(date +%s) - t )) s"

# The one test command: README and .ci/run both call it.
check: unit-test vm-test

demo:
	tests/vm/demo

# The blackout benchmark (issue 6): figures and ratios, not a test. SIZES in MiB.
bench:
	tests/vm/bench/run $(SIZES)

# Fault injection at every step of an upgrade (issue 7): error, crash, reset.
fault-matrix:
	tests/vm/fault-matrix/run all

# cargo-fuzz targets in fuzz/ (docs/fuzzing.md), one after the other. A crash stops
# the run and leaves its input in fuzz/artifacts/<target>/.
FUZZ_SECONDS   ?= 600
FUZZ_TARGETS   := manifest config
FUZZ_TOOLCHAIN ?= +nightly
fuzz:
	for t in $(FUZZ_TARGETS); do \
		$(CARGO) $(FUZZ_TOOLCHAIN) fuzz run $$t -- \
			-max_total_time=$(FUZZ_SECONDS) -timeout=10 || exit 1; done

clean:
	$(CARGO) clean
	rm -rf tests/vm/out
