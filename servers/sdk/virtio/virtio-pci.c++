#include "virtio-pci.h"

#include <cstddef>
#include <cstdio>
#include <cstring>

#include <kj/debug.h>

#include "channel/channel.h"

namespace bulkhead::sdk::virtio {

namespace {

constexpr uint16_t VENDOR_ID = 0x1af4;
constexpr uint16_t MODERN_DEVICE_BASE = 0x1040;
constexpr uint8_t ISR_QUEUE = 1, ISR_CONFIG = 2;
constexpr uint8_t CAPABILITIES_AT = 0x40;
constexpr uint8_t CAP_VENDOR = 0x09;
constexpr uint8_t CAP_MSIX = 0x11;
constexpr uint16_t MSIX_ENABLE = 0x8000, MSIX_FUNCTION_MASK = 0x4000;
constexpr uint32_t MSIX_ENTRY_MASKED = 1;

enum CapType : uint8_t { COMMON = 1, NOTIFY = 2, ISR = 3, DEVICE = 4 };

// Common configuration registers (virtio spec 4.1.4.3).
enum CommonRegister : uint64_t {
  DEVICE_FEATURE_SELECT = 0x00,
  DEVICE_FEATURE = 0x04,
  DRIVER_FEATURE_SELECT = 0x08,
  DRIVER_FEATURE = 0x0c,
  CONFIG_MSIX_VECTOR = 0x10,
  NUM_QUEUES = 0x12,
  DEVICE_STATUS = 0x14,
  CONFIG_GENERATION = 0x15,
  QUEUE_SELECT = 0x16,
  QUEUE_SIZE = 0x18,
  QUEUE_MSIX_VECTOR = 0x1a,
  QUEUE_ENABLE = 0x1c,
  QUEUE_NOTIFY_OFF = 0x1e,
  QUEUE_DESC = 0x20,
  QUEUE_DRIVER = 0x28,
  QUEUE_DEVICE = 0x30,
};

void putLe(std::vector<uint8_t>& bytes, size_t at, uint64_t value, unsigned size) {
  for (unsigned i = 0; i < size; ++i) bytes[at + i] = value >> (8 * i);
}

uint64_t getLe(const std::vector<uint8_t>& bytes, uint64_t at, unsigned size) {
  uint64_t value = 0;
  for (unsigned i = 0; i < size; ++i) {
    uint64_t byte = at + i < bytes.size() ? bytes[at + i] : 0;
    value |= byte << (8 * i);
  }
  return value;
}

// Replaces the `size` bytes at `offset` (relative to a 64-bit field) of `field`.
uint64_t merge(uint64_t field, uint64_t offset, unsigned size, uint64_t value) {
  uint64_t mask = (size >= 8 ? ~0ull : (1ull << (8 * size)) - 1) << (8 * offset);
  return (field & ~mask) | ((value << (8 * offset)) & mask);
}

}  // namespace

VirtioPciDevice::VirtioPciDevice(DeviceHost& host, std::unique_ptr<VirtioModel> model)
    : host(host), model(std::move(model)) {
  KJ_REQUIRE(this->model->queueCount() > 0 && this->model->queueCount() <= MAX_QUEUES);
  KJ_REQUIRE(this->model->declaredState().size() <= MODEL_STATE_BYTES);
  this->model->bind(*this, host);
  uint64_t configBytes = this->model->config().size();
  // Four vendor capabilities, chained from 0x40 (virtio spec 4.1.4).
  capabilities.assign(0x100 - CAPABILITIES_AT, 0);
  struct Cap {
    uint8_t type;
    uint64_t offset;
    uint64_t length;
  } caps[] = {{COMMON, COMMON_OFFSET, COMMON_BYTES},
              {NOTIFY, NOTIFY_OFFSET, NOTIFY_STRIDE * (this->model->queueCount() - 1) + 2},
              {ISR, ISR_OFFSET, 1},
              {DEVICE, DEVICE_OFFSET, configBytes}};
  size_t at = 0;
  for (size_t i = 0; i < 4; ++i) {
    if (caps[i].type == DEVICE && configBytes == 0) break;
    uint8_t length = caps[i].type == NOTIFY ? 20 : 16;
    capabilities[at] = CAP_VENDOR;
    capabilities[at + 1] = CAPABILITIES_AT + at + length;  // the next one
    capabilities[at + 2] = length;
    capabilities[at + 3] = caps[i].type;
    capabilities[at + 4] = 0;  // BAR 0
    putLe(capabilities, at + 8, caps[i].offset, 4);
    putLe(capabilities, at + 12, caps[i].length, 4);
    if (caps[i].type == NOTIFY) putLe(capabilities, at + 16, NOTIFY_STRIDE, 4);  // multiplier
    at += length;
  }
  // Last, MSI-X (PCI Local Bus 3.0, 6.8.2): table size N-1, table and pending bits in BAR 0.
  msixCapability = CAPABILITIES_AT + at;
  capabilities[at] = CAP_MSIX;
  capabilities[at + 1] = 0;
  putLe(capabilities, at + 2, msixVectors() - 1, 2);
  putLe(capabilities, at + 4, MSIX_TABLE_OFFSET, 4);  // BIR (low 3 bits) 0: BAR 0
  putLe(capabilities, at + 8, MSIX_PBA_OFFSET, 4);
  for (MsixEntry& entry : state.msixTable) entry = MsixEntry{0, 0, 0, MSIX_ENTRY_MASKED};
  reset();
}

std::optional<PciFunction> VirtioPciDevice::pciFunction() {
  PciFunction identity;
  identity.vendorId = VENDOR_ID;
  identity.deviceId = MODERN_DEVICE_BASE + model->deviceType();
  identity.classCode = model->classCode();
  identity.revision = 1;
  identity.subsystemVendorId = VENDOR_ID;
  identity.subsystemId = model->deviceType();
  identity.capabilities = CAPABILITIES_AT;
  identity.interruptPin = true;
  identity.bars = {PciBar{0, BAR_BYTES, false}};
  identity.msix.vectors = msixVectors();
  identity.msix.bar = 0;
  identity.msix.tableOffset = MSIX_TABLE_OFFSET;
  return identity;
}

std::vector<Doorbell> VirtioPciDevice::doorbells() {
  std::vector<Doorbell> bells;
  for (unsigned queue = 0; queue < model->queueCount(); ++queue) {
    // Size 0: any write to the queue's own address rings it (on KVM a fast MMIO doorbell,
    // which needs no decoding of the guest's instruction).
    bells.push_back(Doorbell{0, NOTIFY_OFFSET + NOTIFY_STRIDE * queue, 0, 0});
  }
  return bells;
}

void VirtioPciDevice::doorbellsReady(std::vector<int> eventfds) {
  for (size_t queue = 0; queue < eventfds.size() && queue < model->queueCount(); ++queue) {
    int fd = eventfds[queue];
    host.watchReadable(fd, [this, fd, queue]() {
      drainEventfd(fd);
      notify(queue);
      return true;
    });
  }
  // A predecessor may have taken a notification and died before serving it.
  for (unsigned queue = 0; queue < model->queueCount(); ++queue) notify(queue);
}

kj::ArrayPtr<uint8_t> VirtioPciDevice::declaredState() {
  kj::ArrayPtr<uint8_t> own = model->declaredState();
  memcpy(state.model, own.begin(), own.size());
  return stateBytes(state);
}

void VirtioPciDevice::stateRestored() {
  kj::ArrayPtr<uint8_t> own = model->declaredState();
  memcpy(own.begin(), state.model, own.size());
  const DmaMemory& memory = host.dma();
  state.queueSelect = 0;
  // MSI-X choices the predecessor (crashed, or hostile) could not have made.
  state.msixControl &= MSIX_ENABLE | MSIX_FUNCTION_MASK;
  state.msixPending &= (1u << msixVectors()) - 1;
  if (state.configVector >= msixVectors()) state.configVector = NO_VECTOR;
  for (uint16_t& vector : state.queueVectors) {
    if (vector >= msixVectors()) vector = NO_VECTOR;
  }
  for (MsixEntry& entry : state.msixTable) entry.control &= MSIX_ENTRY_MASKED;
  for (unsigned i = 0; i < MAX_QUEUES; ++i) {
    QueueState& queue = state.queues[i];
    if (i >= model->queueCount()) {
      queue = QueueState{};
      continue;
    }
    if (!queue.enabled) continue;
    if (!queueValid(memory, queue, nullptr)) {
      queue.enabled = 0;
      state.status |= STATUS_NEEDS_RESET;
      continue;
    }
    // A chain committed as served: publish it unless the predecessor already had. Chains taken
    // after the last commit are served again (lastAvail is the committed one).
    if (queue.pending) {
      uint16_t published = queue.used;
      memory.load(queue.deviceArea + 2, published);
      Virtqueue virtqueue(memory, queue);
      if (published == queue.used) {
        virtqueue.push(queue.pendingHead, queue.pendingLength);
      } else {
        ++queue.used;
      }
      queue.pending = 0;
    }
  }
}

void VirtioPciDevice::reset() {
  state.deviceFeatureSelect = 0;
  state.driverFeatureSelect = 0;
  state.driverFeatures = 0;
  state.status = 0;
  state.isr = 0;
  state.queueSelect = 0;
  // A device reset leaves the MSI-X capability and table (PCI's) but not the vector choices.
  state.configVector = NO_VECTOR;
  for (unsigned i = 0; i < MAX_QUEUES; ++i) {
    state.queues[i] = QueueState{};
    state.queues[i].size = i < model->queueCount() ? model->maxQueueSize() : 0;
    state.queueVectors[i] = NO_VECTOR;
  }
  updateInterrupt();
  model->reset();
}

QueueState* VirtioPciDevice::selected() {
  return state.queueSelect < model->queueCount() ? &state.queues[state.queueSelect] : nullptr;
}

uint64_t VirtioPciDevice::read(Space space, uint64_t address, unsigned size) {
  if (space == Space::PCI_CONFIG) {
    if (address < CAPABILITIES_AT) return 0;
    std::vector<uint8_t> bytes = capabilities;
    putLe(bytes, msixCapability + 2 - CAPABILITIES_AT, (msixVectors() - 1) | state.msixControl, 2);
    return getLe(bytes, address - CAPABILITIES_AT, size);
  }
  if (space != barSpace(0)) return ~0ull;
  if (address < COMMON_OFFSET + COMMON_BYTES) return readCommon(address - COMMON_OFFSET, size);
  if (address >= MSIX_TABLE_OFFSET) return readMsix(address, size);
  if (address == ISR_OFFSET) {
    // Reading the ISR status acknowledges the interrupt (virtio spec 4.1.4.5).
    uint8_t isr = state.isr;
    state.isr = 0;
    updateInterrupt();
    return isr;
  }
  if (address >= DEVICE_OFFSET && address < NOTIFY_OFFSET) {
    return getLe(model->config(), address - DEVICE_OFFSET, size);
  }
  return 0;
}

void VirtioPciDevice::write(Space space, uint64_t address, unsigned size, uint64_t value) {
  if (space == Space::PCI_CONFIG) {
    writeConfigSpace(address, size, value);
    return;
  }
  if (space != barSpace(0)) return;
  if (address < COMMON_OFFSET + COMMON_BYTES) {
    writeCommon(address - COMMON_OFFSET, size, value);
  } else if (address >= MSIX_TABLE_OFFSET) {
    writeMsix(address, size, value);
  } else if (address >= NOTIFY_OFFSET && address < NOTIFY_OFFSET + NOTIFY_STRIDE * MAX_QUEUES) {
    // A host without ioeventfd: the notification arrives as a write, at the queue's address.
    uint64_t queue = (address - NOTIFY_OFFSET) / NOTIFY_STRIDE;
    if ((address - NOTIFY_OFFSET) % NOTIFY_STRIDE == 0 && queue < model->queueCount()) {
      notify(queue);
    }
  }
}

uint64_t VirtioPciDevice::readCommon(uint64_t offset, unsigned size) {
  QueueState* queue = selected();
  auto queue64 = [&](uint64_t field, uint64_t base) -> uint64_t {
    if (queue == nullptr) return 0;
    uint64_t shift = offset - base;
    return size == 8 ? field : (field >> (8 * shift)) & ((1ull << (8 * size)) - 1);
  };
  switch (offset) {
    case DEVICE_FEATURE_SELECT:
      return state.deviceFeatureSelect;
    case DEVICE_FEATURE:
      return state.deviceFeatureSelect < 2
                 ? offeredFeatures() >> (32 * state.deviceFeatureSelect) & 0xffffffff
                 : 0;
    case DRIVER_FEATURE_SELECT:
      return state.driverFeatureSelect;
    case DRIVER_FEATURE:
      return state.driverFeatureSelect < 2
                 ? state.driverFeatures >> (32 * state.driverFeatureSelect) & 0xffffffff
                 : 0;
    case CONFIG_MSIX_VECTOR:
      return state.configVector;
    case QUEUE_MSIX_VECTOR:
      return queue != nullptr ? state.queueVectors[state.queueSelect] : NO_VECTOR;
    case NUM_QUEUES:
      return model->queueCount();
    case DEVICE_STATUS:
      return state.status;
    case CONFIG_GENERATION:
      return state.configGeneration;
    case QUEUE_SELECT:
      return state.queueSelect;
    case QUEUE_SIZE:
      return queue != nullptr ? queue->size : 0;
    case QUEUE_ENABLE:
      return queue != nullptr ? queue->enabled : 0;
    case QUEUE_NOTIFY_OFF:
      return queue != nullptr ? state.queueSelect : 0;
    case QUEUE_DESC:
    case QUEUE_DESC + 4:
      return queue64(queue != nullptr ? queue->descriptors : 0, QUEUE_DESC);
    case QUEUE_DRIVER:
    case QUEUE_DRIVER + 4:
      return queue64(queue != nullptr ? queue->driverArea : 0, QUEUE_DRIVER);
    case QUEUE_DEVICE:
    case QUEUE_DEVICE + 4:
      return queue64(queue != nullptr ? queue->deviceArea : 0, QUEUE_DEVICE);
    default:
      return 0;
  }
}

void VirtioPciDevice::writeCommon(uint64_t offset, unsigned size, uint64_t value) {
  QueueState* queue = selected();
  // Queue registers are writable only while the queue is disabled and the driver not yet live.
  bool queueWritable = queue != nullptr && !queue->enabled && !(state.status & STATUS_DRIVER_OK);
  switch (offset) {
    case DEVICE_FEATURE_SELECT:
      state.deviceFeatureSelect = value;
      break;
    case DRIVER_FEATURE_SELECT:
      state.driverFeatureSelect = value;
      break;
    case DRIVER_FEATURE:
      if (state.driverFeatureSelect < 2 && !(state.status & STATUS_FEATURES_OK)) {
        state.driverFeatures = merge(state.driverFeatures, 4 * state.driverFeatureSelect, 4, value);
      }
      break;
    case DEVICE_STATUS: {
      uint8_t status = value;
      if (status == 0) {
        reset();
        break;
      }
      if ((status & STATUS_FEATURES_OK) && !(state.status & STATUS_FEATURES_OK)) {
        // Features the device did not offer, or a legacy driver: refuse FEATURES_OK.
        bool acceptable = (state.driverFeatures & ~offeredFeatures()) == 0 &&
                          (state.driverFeatures & F_VERSION_1);
        if (!acceptable) status &= ~STATUS_FEATURES_OK;
      }
      // NEEDS_RESET is the device's to set; the driver cannot clear it but by a reset.
      state.status = (status & ~STATUS_NEEDS_RESET) | (state.status & STATUS_NEEDS_RESET);
      break;
    }
    case QUEUE_SELECT:
      state.queueSelect = value;
      break;
    case CONFIG_MSIX_VECTOR:
    case QUEUE_MSIX_VECTOR: {
      // A vector the device does not have reads back as NO_VECTOR (virtio spec 4.1.5.1.2).
      uint16_t vector = value < msixVectors() ? value : NO_VECTOR;
      if (offset == CONFIG_MSIX_VECTOR) {
        state.configVector = vector;
      } else if (queue != nullptr) {
        state.queueVectors[state.queueSelect] = vector;
      }
      break;
    }
    case QUEUE_SIZE:
      if (queueWritable && value <= model->maxQueueSize()) queue->size = value;
      break;
    case QUEUE_ENABLE:
      if (queueWritable && value == 1) {
        std::string why;
        if (!queueValid(host.dma(), *queue, &why)) {
          breakDevice(kj::str("queue ", state.queueSelect, ": ", why.c_str()).cStr());
          break;
        }
        queue->enabled = 1;
        queue->lastAvail = 0;
        queue->used = 0;
      }
      break;
    case QUEUE_DESC:
    case QUEUE_DESC + 4:
      if (queueWritable)
        queue->descriptors = merge(queue->descriptors, offset - QUEUE_DESC, size, value);
      break;
    case QUEUE_DRIVER:
    case QUEUE_DRIVER + 4:
      if (queueWritable)
        queue->driverArea = merge(queue->driverArea, offset - QUEUE_DRIVER, size, value);
      break;
    case QUEUE_DEVICE:
    case QUEUE_DEVICE + 4:
      if (queueWritable)
        queue->deviceArea = merge(queue->deviceArea, offset - QUEUE_DEVICE, size, value);
      break;
    default:
      break;  // read-only registers
  }
}

bool VirtioPciDevice::live(unsigned queue) const {
  return queue < model->queueCount() && state.queues[queue].enabled &&
         (state.status & STATUS_DRIVER_OK) && !(state.status & STATUS_NEEDS_RESET);
}

VirtioPciDevice::Step VirtioPciDevice::serveNext(unsigned index, Virtqueue& virtqueue,
                                                 const std::function<int64_t(const Chain&)>& fill) {
  std::string why;
  Virtqueue::Pop popped = virtqueue.pop(chain, &why);
  if (popped == Virtqueue::Pop::EMPTY) return Step::EMPTY;
  if (popped == Virtqueue::Pop::BROKEN) {
    breakDevice(kj::str("queue ", index, ": ", why.c_str()).cStr());
    return Step::STOPPED;
  }
  int64_t written = fill(chain);
  if (written == BUSY) {
    --state.queues[index].lastAvail;  // still available: served again on kick()
    return Step::STOPPED;
  }
  if (written < 0 || static_cast<uint64_t>(written) > chain.writableBytes) {
    breakDevice(kj::str("queue ", index, ": the device refused a malformed request").cStr());
    return Step::STOPPED;
  }
  // Commit the chain as served (with whatever output it made) before the guest can see it
  // completed: a successor then publishes it if we do not, and never serves it twice.
  QueueState& queue = state.queues[index];
  queue.pendingHead = chain.head;
  queue.pendingLength = written;
  queue.pending = 1;
  host.stateChanged();
  queue.pending = 0;
  if (!virtqueue.push(chain.head, written)) {
    breakDevice(kj::str("queue ", index, ": the used ring left guest RAM").cStr());
    return Step::STOPPED;
  }
  return Step::SERVED;
}

void VirtioPciDevice::finishBatch(unsigned index, Virtqueue& virtqueue, bool completed) {
  host.stateChanged();
  if (completed && virtqueue.wantsInterrupt()) {
    interruptDriver(ISR_QUEUE, state.queueVectors[index]);
  }
}

void VirtioPciDevice::notify(unsigned index) {
  if (!live(index)) return;
  if (!model->servedOnNotify(index)) {
    model->queueNotified(index);
    return;
  }
  const DmaMemory& memory = host.dma();
  Virtqueue virtqueue(memory, state.queues[index]);
  auto serve = [&](const Chain& c) { return model->serve(index, c, memory); };
  bool completed = false;
  while (serveNext(index, virtqueue, serve) == Step::SERVED) completed = true;
  finishBatch(index, virtqueue, completed);
}

bool VirtioPciDevice::offer(unsigned index, const std::function<int64_t(const Chain&)>& fill) {
  if (!live(index)) return false;
  Virtqueue virtqueue(host.dma(), state.queues[index]);
  Step step = serveNext(index, virtqueue, fill);
  if (step == Step::EMPTY) return false;
  finishBatch(index, virtqueue, step == Step::SERVED);
  return step == Step::SERVED;
}

void VirtioPciDevice::configChanged() {
  ++state.configGeneration;
  interruptDriver(ISR_CONFIG, state.configVector);
  host.stateChanged();
}

void VirtioPciDevice::interruptDriver(uint8_t cause, uint16_t vector) {
  // The configuration bit is set with MSI-X too; the queue bit only without (virtio 4.1.4.5.1).
  if (!msixEnabled() || cause == ISR_CONFIG) state.isr |= cause;
  if (!msixEnabled()) {
    updateInterrupt();
  } else if (vector < msixVectors()) {
    sendVector(vector);
  }
}

void VirtioPciDevice::updateInterrupt() {
  // INTx is asserted exactly while the ISR has a cause (virtio spec 4.1.4.5), and never while
  // MSI-X is enabled (PCI 3.0, 6.8.2).
  bool level = state.isr != 0 && !msixEnabled();
  if (level == static_cast<bool>(state.interruptLevel)) return;
  state.interruptLevel = level;
  host.setPciInterrupt(level);
}

void VirtioPciDevice::breakDevice(const std::string& why) {
  if (!(state.status & STATUS_NEEDS_RESET)) {
    fprintf(stderr, "virtio device %u: %s; the device needs a reset\n", model->deviceType(),
            why.c_str());
  }
  state.status |= STATUS_NEEDS_RESET;
  configChanged();  // the driver is told to look at the status
}

bool VirtioPciDevice::msixMasked(unsigned vector) const {
  return (state.msixControl & MSIX_FUNCTION_MASK) ||
         (state.msixTable[vector].control & MSIX_ENTRY_MASKED);
}

void VirtioPciDevice::sendVector(unsigned vector) {
  if (msixMasked(vector)) {
    state.msixPending |= 1u << vector;  // sent when unmasked
    return;
  }
  host.signalMsi(vector);
}

void VirtioPciDevice::sendPendingVectors() {
  if (!msixEnabled()) return;
  for (unsigned vector = 0; vector < msixVectors(); ++vector) {
    if ((state.msixPending & (1u << vector)) && !msixMasked(vector)) {
      state.msixPending &= ~(1u << vector);
      host.signalMsi(vector);
    }
  }
}

uint64_t VirtioPciDevice::readMsix(uint64_t address, unsigned size) {
  if (address >= MSIX_PBA_OFFSET) return address == MSIX_PBA_OFFSET ? state.msixPending : 0;
  uint64_t offset = address - MSIX_TABLE_OFFSET;
  unsigned vector = offset / sizeof(MsixEntry);
  unsigned within = offset % sizeof(MsixEntry);
  if (vector >= msixVectors() || within + size > sizeof(MsixEntry)) return 0;
  uint64_t value = 0;  // the host is x86, little-endian like the table
  memcpy(&value, reinterpret_cast<const uint8_t*>(&state.msixTable[vector]) + within, size);
  return value;
}

void VirtioPciDevice::writeMsix(uint64_t address, unsigned size, uint64_t value) {
  uint64_t offset = address - MSIX_TABLE_OFFSET;
  unsigned vector = offset / sizeof(MsixEntry);
  unsigned within = offset % sizeof(MsixEntry);
  // The table takes aligned 4- and 8-byte writes (PCI 3.0, 6.8.2.9); the pending bits are
  // read-only.
  if (address >= MSIX_PBA_OFFSET || vector >= msixVectors() || (size != 4 && size != 8) ||
      within % size != 0) {
    return;
  }
  MsixEntry& entry = state.msixTable[vector];
  memcpy(reinterpret_cast<uint8_t*>(&entry) + within, &value, size);
  entry.control &= MSIX_ENTRY_MASKED;  // the other control bits are reserved
  if (within < offsetof(MsixEntry, control)) {
    host.routeMsi(vector, static_cast<uint64_t>(entry.addressHigh) << 32 | entry.addressLow,
                  entry.data);
  }
  sendPendingVectors();
}

void VirtioPciDevice::writeConfigSpace(uint64_t offset, unsigned size, uint64_t value) {
  // Only the MSI-X Message Control's enable and function-mask bits are writable.
  for (unsigned i = 0; i < size; ++i) {
    if (offset + i != msixCapability + 3u) continue;
    uint8_t high = value >> (8 * i);
    bool wasEnabled = msixEnabled();
    state.msixControl = (high << 8) & (MSIX_ENABLE | MSIX_FUNCTION_MASK);
    if (wasEnabled != msixEnabled()) updateInterrupt();
    sendPendingVectors();
  }
}

}  // namespace bulkhead::sdk::virtio
