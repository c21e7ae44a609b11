// The `--device` grammar every glue shares (virtio/catalog/, documented in
// docs/devices.md): typed values, aliases, defaults, and the messages for
// each kind of mistake. tests/glue_device_spec_test.cc feeds the same specs
// to each glue's parser.
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "virtio/catalog/device_spec.h"
#include "virtio/catalog/spec_reader.h"
#include "virtio/catalog/spec_text.h"
#include "virtio/catalog/spec_values.h"

namespace virtio::catalog {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

std::string ErrorOf(std::string_view text) {
  absl::StatusOr<DeviceSpec> spec = ParseDeviceSpec(text);
  EXPECT_FALSE(spec.ok()) << text << " was accepted";
  EXPECT_EQ(spec.status().code(), absl::StatusCode::kInvalidArgument);
  return std::string(spec.status().message());
}

TEST(SpecValues, Booleans) {
  for (const char* yes : {"on", "true", "yes", "1"}) {
    EXPECT_EQ(ParseBoolValue(yes), true) << yes;
  }
  for (const char* no : {"off", "false", "no", "0"}) {
    EXPECT_EQ(ParseBoolValue(no), false) << no;
  }
  for (const char* neither : {"", "On", "2", "maybe"}) {
    EXPECT_EQ(ParseBoolValue(neither), std::nullopt) << neither;
  }
}

TEST(SpecValues, IntegersAndSizes) {
  EXPECT_EQ(ParseIntegerValue("42"), 42u);
  EXPECT_EQ(ParseIntegerValue("0xd0000000"), 0xd0000000u);
  EXPECT_EQ(ParseIntegerValue("0x"), std::nullopt);
  EXPECT_EQ(ParseIntegerValue("-1"), std::nullopt);
  EXPECT_EQ(ParseIntegerValue("12a"), std::nullopt);
  EXPECT_EQ(ParseIntegerValue("99999999999999999999"), std::nullopt);
  EXPECT_EQ(ParseSizeValue("512"), 512u);
  EXPECT_EQ(ParseSizeValue("4k"), 4096u);
  EXPECT_EQ(ParseSizeValue("64M"), 64u << 20);
  EXPECT_EQ(ParseSizeValue("1G"), 1u << 30);
  EXPECT_EQ(ParseSizeValue("2T"), uint64_t{2} << 40);
  EXPECT_EQ(ParseSizeValue("M"), std::nullopt);
  EXPECT_EQ(ParseSizeValue("1Q"), std::nullopt);
  EXPECT_EQ(ParseSizeValue("16777216T"), std::nullopt);  // 2^64: overflow
}

TEST(SpecValues, MacAddresses) {
  const std::optional<MacAddress> mac = ParseMacValue("52:54:00:Ab:cd:EF");
  ASSERT_TRUE(mac.has_value());
  EXPECT_EQ(*mac, (MacAddress{0x52, 0x54, 0x00, 0xab, 0xcd, 0xef}));
  EXPECT_EQ(FormatMac(*mac), "52:54:00:ab:cd:ef");
  for (const char* bad : {"52:54:00:ab:cd", "52:54:00:ab:cd:zz",
                          "52-54-00-ab-cd-ef", "5:254:00:ab:cd:ef", ""}) {
    EXPECT_EQ(ParseMacValue(bad), std::nullopt) << bad;
  }
}

TEST(SpecValues, PciAddresses) {
  EXPECT_EQ(ParsePciAddressValue("05.0"), (PciAddress{.slot = 5}));
  EXPECT_EQ(ParsePciAddressValue("00:1f.7"),
            (PciAddress{.slot = 0x1f, .function = 7}));
  EXPECT_EQ(ParsePciAddressValue("0001:02:03.4"),
            (PciAddress{.segment = 1, .bus = 2, .slot = 3, .function = 4}));
  EXPECT_EQ(ParsePciAddressValue("00:20.0"), std::nullopt);  // slot > 1f
  EXPECT_EQ(ParsePciAddressValue("00:05.8"), std::nullopt);  // function > 7
  EXPECT_EQ(ParsePciAddressValue("00:05"), std::nullopt);
  EXPECT_EQ(ParsePciAddressValue("zz"), std::nullopt);
  EXPECT_EQ(FormatPciAddress({.slot = 3}), "00:03.0");
  EXPECT_EQ(FormatPciAddress({.segment = 1, .slot = 3}), "0001:00:03.0");
  EXPECT_TRUE(LooksLikePciAddress("00:03.0"));
  EXPECT_FALSE(LooksLikePciAddress("0xd0000000"));
}

TEST(SpecText, SplitsTypeAndEntriesAtTheFirstEquals) {
  absl::StatusOr<SpecText> text =
      ParseSpecText("console,backend=socket=/tmp/a=b,id=c0");
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_EQ(text->type, "console");
  ASSERT_EQ(text->entries.size(), 2u);
  EXPECT_EQ(text->entries[0].first, "backend");
  EXPECT_EQ(text->entries[0].second, "socket=/tmp/a=b");
}

TEST(SpecText, RefusesMalformedArguments) {
  EXPECT_THAT(ErrorOf(""), HasSubstr("empty device type"));
  EXPECT_THAT(ErrorOf(",a=b"), HasSubstr("empty device type"));
  EXPECT_THAT(ErrorOf("blk,path"),
              HasSubstr("--device blk,path: 'path' is not key=value"));
  EXPECT_THAT(ErrorOf("blk,=x"), HasSubstr("'=x' is not key=value"));
  EXPECT_THAT(ErrorOf("blk,path=a,path=b"),
              HasSubstr("--device blk,path=a,path=b: 'path' given twice"));
}

TEST(DeviceSpec, DefaultsAreTheSameForEveryGlue) {
  absl::StatusOr<DeviceSpec> net = ParseDeviceSpec("net");
  ASSERT_TRUE(net.ok()) << net.status();
  EXPECT_EQ(net->type, DeviceType::kNet);
  EXPECT_EQ(net->net.backend, NetBackendKind::kLoopback);
  EXPECT_EQ(net->net.queue_pairs, 1);
  EXPECT_TRUE(net->net.ctrl_vq);
  EXPECT_TRUE(net->packed);
  EXPECT_EQ(net->queue_size, std::nullopt);
  EXPECT_EQ(net->id, "");

  absl::StatusOr<DeviceSpec> console = ParseDeviceSpec("console");
  ASSERT_TRUE(console.ok()) << console.status();
  EXPECT_EQ(console->console.backend, ConsoleBackendKind::kStdio);

  absl::StatusOr<DeviceSpec> rng = ParseDeviceSpec("rng");
  ASSERT_TRUE(rng.ok()) << rng.status();
  EXPECT_EQ(rng->rng.rate, 0u);
}

TEST(DeviceSpec, Blk) {
  absl::StatusOr<DeviceSpec> file = ParseDeviceSpec(
      "blk,path=disk.img,readonly=yes,direct=1,num-queues=4,serial=d0,"
      "id=disk0,packed=false,queue-size=256");
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ(file->blk.backend, BlockBackendKind::kFile);
  EXPECT_EQ(file->blk.path, "disk.img");
  EXPECT_TRUE(file->blk.readonly);
  EXPECT_TRUE(file->blk.direct);
  EXPECT_EQ(file->blk.num_queues, 4);
  EXPECT_EQ(file->blk.serial, "d0");
  EXPECT_EQ(file->id, "disk0");
  EXPECT_FALSE(file->packed);
  EXPECT_EQ(file->queue_size, 256u);

  absl::StatusOr<DeviceSpec> ram = ParseDeviceSpec("blk,backend=ram,size=32M");
  ASSERT_TRUE(ram.ok()) << ram.status();
  EXPECT_EQ(ram->blk.backend, BlockBackendKind::kRam);
  EXPECT_EQ(ram->blk.size, 32u << 20);
  absl::StatusOr<DeviceSpec> null = ParseDeviceSpec("blk,backend=null,size=1G");
  ASSERT_TRUE(null.ok()) << null.status();
  EXPECT_EQ(null->blk.backend, BlockBackendKind::kNull);
}

TEST(DeviceSpec, QueuesIsAnAliasOfNumQueues) {
  absl::StatusOr<DeviceSpec> spec = ParseDeviceSpec("blk,path=d,queues=2");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->blk.num_queues, 2);
  EXPECT_THAT(ErrorOf("blk,path=d,queues=2,num-queues=2"),
              HasSubstr("'num-queues' and 'queues' are the same key"));
  EXPECT_THAT(ErrorOf("blk,path=d,num-queues=65"),
              HasSubstr("'num-queues=65' is not a number in 1..64"));
  EXPECT_THAT(ErrorOf("blk,path=d,queues=0"),
              HasSubstr("'queues=0' is not a number in 1..64"));
}

TEST(DeviceSpec, BlkMistakes) {
  EXPECT_THAT(ErrorOf("blk"),
              HasSubstr("blk: needs path=FILE or backend=ram|null,size=BYTES"));
  EXPECT_THAT(ErrorOf("blk,backend=file"),
              HasSubstr("backend=file needs path="));
  EXPECT_THAT(ErrorOf("blk,path=d,size=1M"),
              HasSubstr("size= is for backend=ram or null"));
  EXPECT_THAT(ErrorOf("blk,backend=ram,path=d"),
              HasSubstr("path= is for backend=file"));
  EXPECT_THAT(ErrorOf("blk,backend=ram"), HasSubstr("backend=ram needs size="));
  EXPECT_THAT(ErrorOf("blk,backend=null,size=1Q"),
              HasSubstr("'size=1Q' is not a number"));
  EXPECT_THAT(ErrorOf("blk,backend=tape,size=1M"),
              HasSubstr("unknown backend 'tape'"));
  EXPECT_THAT(ErrorOf("blk,path=d,readonly=maybe"),
              HasSubstr("'readonly=maybe' is not on/off"));
}

TEST(DeviceSpec, UnknownKeysNameTheKeyAndTheSpec) {
  EXPECT_THAT(
      ErrorOf("blk,path=d,bogus=1"),
      AllOf(HasSubstr("--device blk,path=d,bogus=1"),
            HasSubstr("unknown key 'bogus' for blk"), HasSubstr("num-queues")));
  // A key of another type is as unknown.
  EXPECT_THAT(ErrorOf("rng,path=x"), HasSubstr("unknown key 'path' for rng"));
  EXPECT_THAT(ErrorOf("scsi"), HasSubstr("unknown type 'scsi'"));
}

TEST(DeviceSpec, Net) {
  absl::StatusOr<DeviceSpec> tap = ParseDeviceSpec(
      "net,backend=tap,ifname=tap0,mac=52:54:00:00:00:01,queue-pairs=2,"
      "mtu=9000");
  ASSERT_TRUE(tap.ok()) << tap.status();
  EXPECT_EQ(tap->net.backend, NetBackendKind::kTap);
  EXPECT_EQ(tap->net.ifname, "tap0");
  EXPECT_EQ(tap->net.mac, (MacAddress{0x52, 0x54, 0, 0, 0, 1}));
  EXPECT_EQ(tap->net.queue_pairs, 2);
  EXPECT_EQ(tap->net.mtu, 9000);
  absl::StatusOr<DeviceSpec> gen =
      ParseDeviceSpec("net,backend=gen,frame-len=1500");
  ASSERT_TRUE(gen.ok()) << gen.status();
  EXPECT_EQ(gen->net.backend, NetBackendKind::kGenerator);
  EXPECT_EQ(gen->net.frame_len, 1500u);

  EXPECT_THAT(ErrorOf("net,backend=ether"),
              HasSubstr("unknown backend 'ether'"));
  EXPECT_THAT(ErrorOf("net,ifname=x"), HasSubstr("ifname= is for backend=tap"));
  EXPECT_THAT(ErrorOf("net,frame-len=64"),
              HasSubstr("frame-len= is for backend=generator"));
  EXPECT_THAT(ErrorOf("net,queue-pairs=2,ctrl-vq=off"),
              HasSubstr("queue-pairs > 1 needs ctrl-vq=on"));
  EXPECT_THAT(ErrorOf("net,mac=01:02:03"),
              HasSubstr("'mac=01:02:03' is not a MAC address"));
  EXPECT_THAT(ErrorOf("net,mtu=65536"),
              HasSubstr("'mtu=65536' is not a number in 0..65535"));
}

TEST(DeviceSpec, ConsolePathSpellings) {
  for (const char* text : {"console,backend=socket=/tmp/c.sock",
                           "console,backend=socket,path=/tmp/c.sock",
                           "console,socket=/tmp/c.sock"}) {
    absl::StatusOr<DeviceSpec> spec = ParseDeviceSpec(text);
    ASSERT_TRUE(spec.ok()) << text << ": " << spec.status();
    EXPECT_EQ(spec->console.backend, ConsoleBackendKind::kSocket) << text;
    EXPECT_EQ(spec->console.path, "/tmp/c.sock") << text;
  }
  EXPECT_THAT(ErrorOf("console,backend=socket"),
              HasSubstr("backend=socket needs a path"));
  EXPECT_THAT(ErrorOf("console,backend=stdio,path=/x"),
              HasSubstr("a path is for backend=socket or backend=file"));
  EXPECT_THAT(ErrorOf("console,backend=socket=/a,path=/b"),
              HasSubstr("give the path once"));
  EXPECT_THAT(ErrorOf("console,backend=serial"),
              HasSubstr("unknown backend 'serial'"));
}

TEST(DeviceSpec, GlueKeysAreReadFromTheSameSpec) {
  std::optional<PciAddress> addr;
  absl::StatusOr<DeviceSpec> spec = ParseDeviceSpec(
      "rng,addr=00:05.0", [&](SpecReader& reader, const DeviceSpec&) {
        absl::StatusOr<std::optional<PciAddress>> read =
            reader.Pci({.name = "addr"});
        if (!read.ok()) return read.status();
        addr = *read;
        return absl::OkStatus();
      });
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(addr, (PciAddress{.slot = 5}));
  // Without the glue's key it is unknown.
  EXPECT_THAT(ErrorOf("rng,addr=00:05.0"), HasSubstr("unknown key 'addr'"));
}

TEST(DeviceSpec, FormatRoundTrips) {
  for (const char* text :
       {"blk,id=d,path=x.img,readonly=on,num-queues=2,serial=s",
        "blk,backend=ram,size=1048576", "net,backend=tap,ifname=t0,packed=off",
        "console,backend=socket=/tmp/s", "rng,rate=1024,queue-size=64"}) {
    absl::StatusOr<DeviceSpec> spec = ParseDeviceSpec(text);
    ASSERT_TRUE(spec.ok()) << text << ": " << spec.status();
    absl::StatusOr<DeviceSpec> again = ParseDeviceSpec(FormatDeviceSpec(*spec));
    ASSERT_TRUE(again.ok()) << FormatDeviceSpec(*spec);
    EXPECT_EQ(FormatDeviceSpec(*again), FormatDeviceSpec(*spec)) << text;
  }
}

}  // namespace
}  // namespace virtio::catalog
