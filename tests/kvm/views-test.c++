// Guest views on a running VM: a guest builds its own page tables, GDT and IDT; bulkhead-ctl
// walks and decodes them, and what it shows must match what the guest set.
#include <signal.h>
#include <sys/wait.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <regex>
#include <thread>

#include "tests/kvm/run-bulkhead.h"

namespace bulkhead::testing {
namespace {

std::string hexOf(const std::string& text, const std::string& key) {
  std::smatch match;
  std::regex pattern(key + "=0x([0-9a-f]+)");
  return std::regex_search(text, match, pattern) ? match[1].str() : "";
}

TEST(Views, PageWalksAndDescriptorTablesMatchWhatTheGuestSet) {
  REQUIRE_KVM();
  std::string socket = ::testing::TempDir() + "/bulkhead-views.sock";
  Capture vm = startCaptured({"run", "--flat", guestDir() + "/views.bin", "--entry", "0x100000",
                              "--mode", "64", "--control", socket});
  std::thread reader([&vm]() { vm.wait(); });
  ASSERT_TRUE(vm.waitForOutput());  // the guest printed: its tables are in place
  std::string out = runCtl(socket, "walk 0x40000234");
  EXPECT_NE(out.find("-> physical 0x400234, page 2M, writable supervisor"), std::string::npos)
      << out;
  out = runCtl(socket, "walk 0x40200010");
  EXPECT_NE(out.find("PTE   at "), std::string::npos) << out;
  EXPECT_NE(out.find("-> physical 0x123010, page 4K, read-only user"), std::string::npos) << out;
  out = runCtl(socket, "walk 0x80000000");
  EXPECT_NE(out.find("fault: #PF error code 0x0: PDPTE not present"), std::string::npos) << out;
  out = runCtl(socket, "walk 0x800000000000");
  EXPECT_NE(out.find("fault: #GP"), std::string::npos) << out;

  std::string gdt = runCtl(socket, "gdt");
  EXPECT_NE(gdt.find("0x0018 code 64-bit execute/read"), std::string::npos) << gdt;
  EXPECT_NE(gdt.find("0x0020 data 32-bit read/write, accessed base 0x0 limit 0xffffffff DPL 3"),
            std::string::npos)
      << gdt;
  EXPECT_NE(gdt.find("0x0028 tss 64-bit available"), std::string::npos) << gdt;
  std::string idt = runCtl(socket, "idt");
  EXPECT_NE(idt.find("vector 0x20 interrupt gate 64-bit -> 0x0018:0x"), std::string::npos) << idt;
  EXPECT_NE(idt.find("vector 0x80 trap gate 64-bit -> 0x0018:0x"), std::string::npos) << idt;
  EXPECT_NE(idt.find("ist 1 DPL 3 present"), std::string::npos) << idt;
  EXPECT_EQ(runCtl(socket, "ldt"), "no LDT loaded\n");
  std::string registers = runCtl(socket, "regs");
  EXPECT_NE(registers.find("paging: 4-level paging"), std::string::npos) << registers;
  EXPECT_NE(runCtl(socket, "pmem 0x9000 8").find("0000000000009000  "), std::string::npos);

  // The guest may still be printing its line (slowly, under KVM here): wait until the output
  // has been still for half a second before ending it.
  for (int i = 0; i < 100; ++i) {
    size_t before = vm.outputSoFar();
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    if (vm.outputSoFar() == before) break;
  }
  kill(vm.pid, SIGTERM);
  reader.join();
  // What the guest printed: its own addresses, which the views must agree with.
  std::string tss = hexOf(vm.out, "tss"), target = hexOf(vm.out, "handler"),
              pml4 = hexOf(vm.out, "pml4");
  ASSERT_FALSE(tss.empty()) << vm.out;
  EXPECT_NE(gdt.find("tss 64-bit available base 0x" + tss + " limit 0x67"), std::string::npos)
      << gdt << vm.out;
  EXPECT_NE(idt.find("-> 0x0018:0x" + target + " DPL 0"), std::string::npos) << idt << vm.out;
  EXPECT_NE(registers.find("cr3 " + std::string(16 - pml4.size(), '0') + pml4), std::string::npos)
      << registers << vm.out;
}

}  // namespace
}  // namespace bulkhead::testing
