// The three glues accept one `--device` syntax: the same specs go to
// vhost-user-device's, virtio-kvm's and xen-virtio-backend's parsers, which
// must agree on what each spec means (the catalogue's DeviceSpec, printed
// canonically), refuse the same mistakes with the same message, and refuse
// what one glue cannot build by saying so rather than as a syntax error.
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "glue/kvm/device_spec.h"
#include "glue/vhost-user/device_spec.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "virtio/catalog/device_spec.h"
#include "xen_glue/device_spec.h"

namespace {

using ::testing::HasSubstr;
using virtio::catalog::FormatDeviceSpec;

// One glue's verdict on a spec: the shared part it parsed, or its error.
struct Verdict {
  absl::Status status;
  std::string canonical;  // FormatDeviceSpec of the shared part
};

Verdict VhostUser(const std::string& text) {
  absl::StatusOr<virtio::catalog::DeviceSpec> spec =
      vhost_user::ParseDeviceSpec(text);
  if (!spec.ok()) return {spec.status(), ""};
  return {absl::OkStatus(), FormatDeviceSpec(*spec)};
}

Verdict Kvm(const std::string& text) {
  absl::StatusOr<kvmglue::DeviceSpec> spec = kvmglue::ParseDeviceSpec(text);
  if (!spec.ok()) return {spec.status(), ""};
  return {absl::OkStatus(), FormatDeviceSpec(spec->device)};
}

Verdict Xen(const std::string& text) {
  absl::StatusOr<virtio::xg::DeviceSpec> spec =
      virtio::xg::ParseDeviceSpec(text);
  if (!spec.ok()) return {spec.status(), ""};
  return {absl::OkStatus(), FormatDeviceSpec(spec->device)};
}

// Specs every glue builds, in the spellings the glues' tests, scripts and
// READMEs use.
const std::vector<std::string> kAcceptedEverywhere = {
    "rng",
    "rng,id=rng0,packed=off",
    "rng,packed=no",
    "blk,path=disk.img",
    "blk,path=disk.img,readonly=on",
    "blk,path=disk.img,readonly=true,packed=false,id=disk0",
    "net",
    "net,backend=loopback",
    "net,backend=tap",
    "net,backend=tap,ifname=tap0",
    "console",
    "console,backend=stdio",
    "console,backend=pty",
    "console,backend=socket=/tmp/hvc0.sock",
    "console,backend=socket,path=/tmp/hvc0.sock",
    "console,backend=file=/tmp/out.txt",
    "console,socket=/tmp/hvc0.sock",
};

TEST(GlueDeviceSpec, EveryGlueAcceptsTheSameSpecsAndReadsThemAlike) {
  for (const std::string& text : kAcceptedEverywhere) {
    const Verdict vhost = VhostUser(text);
    const Verdict kvm = Kvm(text);
    const Verdict xen = Xen(text);
    ASSERT_TRUE(vhost.status.ok()) << "vhost-user: " << vhost.status;
    ASSERT_TRUE(kvm.status.ok()) << "kvm: " << kvm.status;
    ASSERT_TRUE(xen.status.ok()) << "xen: " << xen.status;
    EXPECT_EQ(vhost.canonical, kvm.canonical) << text;
    EXPECT_EQ(vhost.canonical, xen.canonical) << text;
  }
}

TEST(GlueDeviceSpec, DefaultsAgree) {
  EXPECT_EQ(VhostUser("net").canonical, "net,backend=loopback");
  EXPECT_EQ(Kvm("net").canonical, "net,backend=loopback");
  EXPECT_EQ(Xen("net").canonical, "net,backend=loopback");
  EXPECT_EQ(VhostUser("console").canonical, "console,backend=stdio");
  EXPECT_EQ(Kvm("console").canonical, "console,backend=stdio");
  EXPECT_EQ(Xen("console").canonical, "console,backend=stdio");
}

// Grammar mistakes: every glue refuses them with the same message, which
// names the key and quotes the spec ("--device '' ..." for the empty one).
struct Mistake {
  std::string text;
  std::string message;
};
const std::vector<Mistake> kRefusedEverywhere = {
    {"gpu", "unknown type 'gpu'"},
    {"rng,noequals", "'noequals' is not key=value"},
    {"rng,packed=on,packed=off", "'packed' given twice"},
    {"rng,packed=maybe", "'packed=maybe' is not on/off"},
    {"rng,colour=red", "unknown key 'colour' for rng"},
    {"rng,path=x", "unknown key 'path' for rng"},
    {"blk", "needs path=FILE or backend=ram|null,size=BYTES"},
    {"blk,path=d,readonly=maybe", "'readonly=maybe' is not on/off"},
    {"blk,path=d,num-queues=2,queues=2", "are the same key"},
    {"blk,path=d,num-queues=65", "'num-queues=65' is not a number in 1..64"},
    {"blk,backend=ram,size=1Q", "'size=1Q' is not a number"},
    {"net,backend=vde", "unknown backend 'vde'"},
    {"net,ifname=tap0", "ifname= is for backend=tap"},
    {"net,mac=52:54:00", "'mac=52:54:00' is not a MAC address"},
    {"console,backend=tty", "unknown backend 'tty'"},
    {"console,backend=socket", "backend=socket needs a path"},
    {"console,backend=stdio,path=/x", "a path is for backend=socket"},
    {"console,backend=socket=/a,path=/b", "give the path once"},
    {"console,socket=", "backend=socket needs a path"},
};

TEST(GlueDeviceSpec, EveryGlueRefusesTheSameMistakesAlike) {
  for (const Mistake& m : kRefusedEverywhere) {
    const Verdict vhost = VhostUser(m.text);
    const Verdict kvm = Kvm(m.text);
    const Verdict xen = Xen(m.text);
    for (const Verdict& glue : {vhost, kvm, xen}) {
      EXPECT_THAT(glue.status.message(), HasSubstr(m.message)) << m.text;
      EXPECT_THAT(glue.status.message(), HasSubstr("--device " + m.text))
          << m.text;
    }
    // Word for word, but for the list of keys an unknown key's message
    // adds (each glue takes its own placement keys).
    if (m.message.find("unknown key") == std::string::npos) {
      EXPECT_EQ(kvm.status.message(), vhost.status.message()) << m.text;
      EXPECT_EQ(xen.status.message(), vhost.status.message()) << m.text;
    }
  }
}

// Valid syntax that a glue cannot build: refused by that glue by name, not
// as a syntax error; vhost-user-device builds them all.
TEST(GlueDeviceSpec, WhatAGlueCannotBuildIsRefusedByName) {
  for (const char* text :
       {"blk,backend=ram,size=32M", "blk,backend=null,size=1G",
        "blk,path=d,num-queues=32", "net,backend=null",
        "net,backend=generator,frame-len=64", "net,queue-pairs=2",
        "net,mac=52:54:00:12:34:56", "rng,rate=1M", "blk,path=d,serial=disk0",
        "rng,queue-size=256"}) {
    EXPECT_TRUE(VhostUser(text).status.ok()) << text;
    const Verdict kvm = Kvm(text);
    if (!kvm.status.ok()) {
      EXPECT_THAT(kvm.status.message(), HasSubstr("virtio-kvm")) << text;
    }
    const Verdict xen = Xen(text);
    if (!xen.status.ok()) {
      EXPECT_THAT(xen.status.message(), HasSubstr("xen-virtio-backend"))
          << text;
    }
  }
}

// Where the device sits is the glue's own business: vhost-user has no such
// keys; virtio-kvm and the Xen backend read addr= alike.
TEST(GlueDeviceSpec, PlacementKeysAreGlueExtensions) {
  EXPECT_THAT(VhostUser("rng,addr=00:05.0").status.message(),
              HasSubstr("unknown key 'addr' for rng"));
  absl::StatusOr<kvmglue::DeviceSpec> kvm =
      kvmglue::ParseDeviceSpec("rng,addr=00:05.0");
  ASSERT_TRUE(kvm.ok()) << kvm.status();
  EXPECT_EQ(kvm->pci_addr->slot, 5);
  absl::StatusOr<virtio::xg::DeviceSpec> xen =
      virtio::xg::ParseDeviceSpec("rng,addr=00:05.0");
  ASSERT_TRUE(xen.ok()) << xen.status();
  EXPECT_EQ(xen->pci_addr->dev, 5);
  // A glue's own key is unknown to the others.
  EXPECT_THAT(Kvm("rng,grant=on").status.message(),
              HasSubstr("unknown key 'grant' for rng"));
}

}  // namespace
