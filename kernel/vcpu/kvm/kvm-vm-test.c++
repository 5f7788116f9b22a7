// The GSI routing table the core hands KVM when a device programs an MSI-X vector: it replaces
// KVM's default table, so the PIC and IOAPIC routes must come back exactly as KVM had them.
#include "kernel/vcpu/kvm/kvm-vm.h"

#include <gtest/gtest.h>

namespace bulkhead {
namespace {

std::vector<kvm_irq_routing_entry> routesOf(const std::vector<kvm_irq_routing_entry>& table,
                                            uint32_t gsi) {
  std::vector<kvm_irq_routing_entry> found;
  for (const auto& entry : table) {
    if (entry.gsi == gsi) found.push_back(entry);
  }
  return found;
}

TEST(KvmRouting, KeepsKvmsDefaultPinRoutes) {
  auto table = KvmVm::routingTable({});
  EXPECT_EQ(table.size(), 16u * 2 + 8);  // ISA GSIs to the PIC and the IOAPIC, 16-23 to the IOAPIC
  for (uint32_t gsi = 0; gsi < MSI_GSI_BASE; ++gsi) {
    auto routes = routesOf(table, gsi);
    ASSERT_EQ(routes.size(), gsi < 16 ? 2u : 1u) << gsi;
    bool ioapic = false;
    for (const auto& route : routes) {
      EXPECT_EQ(route.type, static_cast<uint32_t>(KVM_IRQ_ROUTING_IRQCHIP));
      if (route.u.irqchip.irqchip == KVM_IRQCHIP_IOAPIC) {
        ioapic = true;
        EXPECT_EQ(route.u.irqchip.pin, gsi);
      } else {
        EXPECT_EQ(route.u.irqchip.irqchip,
                  static_cast<uint32_t>(gsi < 8 ? KVM_IRQCHIP_PIC_MASTER : KVM_IRQCHIP_PIC_SLAVE));
        EXPECT_EQ(route.u.irqchip.pin, gsi % 8);
      }
    }
    EXPECT_TRUE(ioapic) << gsi;
  }
}

TEST(KvmRouting, AddsEachMsiVectorAsItsMessage) {
  auto table = KvmVm::routingTable({{24, {0xfee01000, 0x4041}}, {30, {0x1fee00000ull, 0x22}}});
  auto first = routesOf(table, 24);
  ASSERT_EQ(first.size(), 1u);
  EXPECT_EQ(first[0].type, static_cast<uint32_t>(KVM_IRQ_ROUTING_MSI));
  EXPECT_EQ(first[0].u.msi.address_lo, 0xfee01000u);
  EXPECT_EQ(first[0].u.msi.address_hi, 0u);
  EXPECT_EQ(first[0].u.msi.data, 0x4041u);
  auto second = routesOf(table, 30);
  ASSERT_EQ(second.size(), 1u);
  EXPECT_EQ(second[0].u.msi.address_hi, 1u);
  EXPECT_EQ(second[0].u.msi.address_lo, 0xfee00000u);
}

}  // namespace
}  // namespace bulkhead
