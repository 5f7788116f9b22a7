// The virtio 1.x PCI transport (modern interface, virtio spec section 4.1), so that a device
// author writes only the device part: a VirtioModel.
//
// Layout: one 32 KiB memory BAR (BAR 0) holding the common configuration at 0x0000, the ISR
// status at 0x1000, the device configuration at 0x2000, the notification registers from 0x3000
// (notify_off_multiplier 4: queue N at 0x3000 + 4N, where any write notifies it),
// the MSI-X table at 0x4000 and its pending bits at 0x5000. Each queue's notification is a
// doorbell, so under KVM it reaches the server as an eventfd without a trip through the core.
//
// Interrupts: INTx from the ISR while MSI-X is off; with MSI-X on, one vector per queue plus
// one for configuration changes (queueCount() + 1), each sent to the vector the driver chose
// for it (NO_VECTOR: none). The transport keeps the MSI-X table, masks and pending bits; each
// table write hands the entry's message to the core (DeviceHost::routeMsi), which routes it.
//
// Recovery: the transport's state (features, status, queue addresses and positions) is the
// device's declared state. Each chain is served, then committed as served (with its used
// element and any output it made) and only then published on the used ring. A restarted server
// resumes from the last commit: it publishes the committed chain if the guest's used index
// shows it was not, and serves again only chains taken after that commit, whose effects were
// not committed. So no chain is completed twice or lost, and its output appears once.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "device.h"
#include "dma-memory.h"
#include "virtqueue.h"

namespace bulkhead::sdk::virtio {

constexpr unsigned MAX_QUEUES = 8;
constexpr size_t MODEL_STATE_BYTES = 256;
constexpr uint64_t F_VERSION_1 = 1ull << 32;

constexpr uint8_t STATUS_ACKNOWLEDGE = 1;
constexpr uint8_t STATUS_DRIVER = 2;
constexpr uint8_t STATUS_DRIVER_OK = 4;
constexpr uint8_t STATUS_FEATURES_OK = 8;
constexpr uint8_t STATUS_NEEDS_RESET = 0x40;
constexpr uint8_t STATUS_FAILED = 0x80;

// BAR 0 layout.
constexpr uint64_t COMMON_OFFSET = 0x0000;
constexpr uint64_t COMMON_BYTES = 0x38;
constexpr uint64_t ISR_OFFSET = 0x1000;
constexpr uint64_t DEVICE_OFFSET = 0x2000;
constexpr uint64_t NOTIFY_OFFSET = 0x3000;
constexpr uint64_t NOTIFY_STRIDE = 4;  // notify_off_multiplier: queue N at NOTIFY_OFFSET + 4N
constexpr uint64_t MSIX_TABLE_OFFSET = 0x4000;
constexpr uint64_t MSIX_PBA_OFFSET = 0x5000;
constexpr uint64_t BAR_BYTES = 0x8000;
constexpr uint16_t NO_VECTOR = 0xffff;

// What a model may do to its queues outside serve(): devices whose data arrives from a backend
// (a network's receive queue) fill chains when the data comes, not when the driver notifies.
class VirtioQueues {
 public:
  virtual ~VirtioQueues() = default;
  // Serves the next available chain of `queue` with `fill` (which returns as serve() does).
  // False when the driver has none available or the device is not running.
  virtual bool offer(unsigned queue, const std::function<int64_t(const Chain&)>& fill) = 0;
  // Serves `queue`'s available chains now, as a notification would (after BUSY).
  virtual void kick(unsigned queue) = 0;
  // The device configuration changed: a new generation and a configuration interrupt.
  virtual void configChanged() = 0;
};

// serve()'s answer when the backend cannot take the chain yet: the chain stays available and the
// queue is not served further until the model calls VirtioQueues::kick().
constexpr int64_t BUSY = -2;

// The device part of a virtio device.
class VirtioModel {
 public:
  virtual ~VirtioModel() = default;
  virtual uint16_t deviceType() const = 0;  // virtio device ID: 1 net, 2 block, 4 entropy, ...
  virtual uint32_t classCode() const = 0;   // PCI class code
  virtual uint64_t features() const = 0;    // device-specific feature bits offered
  virtual unsigned queueCount() const = 0;  // at most MAX_QUEUES
  virtual uint16_t maxQueueSize() const { return 256; }
  // The device configuration space (read-only to the driver here).
  virtual std::vector<uint8_t> config() const { return {}; }
  // Serves one chain from `queue`. Returns the number of bytes written into the chain's
  // writable buffers, -1 when the chain is malformed for this device (the queue breaks), or
  // BUSY.
  virtual int64_t serve(unsigned queue, const Chain& chain, const DmaMemory& memory) = 0;
  // Whether the driver's notification serves `queue` (else the model fills its chains through
  // VirtioQueues::offer when it has data, and is told of new chains by queueNotified()).
  virtual bool servedOnNotify(unsigned queue) const { return true; }
  virtual void queueNotified(unsigned queue) {}
  // Called once, before anything else: the model's handle on its queues and host.
  virtual void bind(VirtioQueues& queues, DeviceHost& host) {}
  // The driver reset the device.
  virtual void reset() {}
  // The device part's own declared state (at most MODEL_STATE_BYTES), checkpointed with the
  // transport's; see Device::declaredState().
  virtual kj::ArrayPtr<uint8_t> declaredState() { return nullptr; }
};

class VirtioPciDevice final : public Device, public VirtioQueues {
 public:
  VirtioPciDevice(DeviceHost& host, std::unique_ptr<VirtioModel> model);

  std::vector<IoRange> ranges() override { return {}; }
  std::optional<PciFunction> pciFunction() override;
  std::vector<Doorbell> doorbells() override;
  void doorbellsReady(std::vector<int> eventfds) override;
  uint64_t read(Space space, uint64_t address, unsigned size) override;
  void write(Space space, uint64_t address, unsigned size, uint64_t value) override;
  kj::ArrayPtr<uint8_t> declaredState() override;
  void stateRestored() override;

  // Serves every available chain of `queue` (a doorbell rang). Public for tests.
  void notify(unsigned queue);
  bool offer(unsigned queue, const std::function<int64_t(const Chain&)>& fill) override;
  void kick(unsigned queue) override { notify(queue); }
  void configChanged() override;
  uint8_t status() const { return state.status; }

 private:
  struct MsixEntry {
    uint32_t addressLow, addressHigh, data, control;  // control bit 0: masked
  };
  struct State {
    uint32_t deviceFeatureSelect;
    uint32_t driverFeatureSelect;
    uint64_t driverFeatures;
    uint8_t status;
    uint8_t isr;
    uint8_t configGeneration;
    uint8_t interruptLevel;
    uint16_t queueSelect;
    uint16_t pad[3];
    QueueState queues[MAX_QUEUES];
    uint8_t model[MODEL_STATE_BYTES];
    // MSI-X.
    uint16_t msixControl;  // the capability's Message Control (enable, function mask)
    uint16_t configVector;
    uint16_t queueVectors[MAX_QUEUES];
    uint32_t msixPending;  // one bit per vector, set while masked
    MsixEntry msixTable[MAX_QUEUES + 1];
  };

  uint64_t offeredFeatures() const { return model->features() | F_VERSION_1; }
  uint64_t readCommon(uint64_t offset, unsigned size);
  void writeCommon(uint64_t offset, unsigned size, uint64_t value);
  uint64_t readConfigSpace(uint64_t offset, unsigned size);
  void reset();
  void breakDevice(const std::string& why);
  // Drives INTx from the ISR: raised while it holds a cause (and MSI-X is off), lowered once
  // it is read.
  void updateInterrupt();
  // Tells the driver: `cause` (ISR_QUEUE or ISR_CONFIG) through INTx, or `vector` with MSI-X.
  void interruptDriver(uint8_t cause, uint16_t vector);
  unsigned msixVectors() const { return model->queueCount() + 1; }
  bool msixEnabled() const { return state.msixControl & 0x8000; }
  bool msixMasked(unsigned vector) const;
  void sendVector(unsigned vector);
  void sendPendingVectors();
  uint64_t readMsix(uint64_t address, unsigned size);
  void writeMsix(uint64_t address, unsigned size, uint64_t value);
  void writeConfigSpace(uint64_t offset, unsigned size, uint64_t value);
  bool live(unsigned queue) const;
  // Takes the next available chain of queue `index` and serves it with `fill`: EMPTY when there
  // is none, STOPPED when the queue broke or the backend was BUSY.
  enum class Step { EMPTY, SERVED, STOPPED };
  Step serveNext(unsigned index, Virtqueue& virtqueue,
                 const std::function<int64_t(const Chain&)>& fill);
  // After serving: checkpoint, and interrupt the driver if it wants to hear of completions.
  void finishBatch(unsigned index, Virtqueue& virtqueue, bool completed);
  QueueState* selected();

  DeviceHost& host;
  std::unique_ptr<VirtioModel> model;
  State state{};
  std::vector<uint8_t> capabilities;  // config space 0x40..0xff
  uint8_t msixCapability = 0;         // the MSI-X capability's offset in config space
  Chain chain;
};

}  // namespace bulkhead::sdk::virtio
