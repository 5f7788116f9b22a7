#include "kernel/irqchip/pit.h"

#include "kernel/base/status-macros.h"

namespace bulkhead::irqchip {

absl::Status Pit::attach(IoBus& bus) {
  RETURN_IF_ERROR(bus.add(Space::PIO, 0x40, 4, Route{this, false, "pit"}));
  return bus.add(Space::PIO, 0x61, 1, Route{this, false, "pit"});
}

uint64_t Pit::ticksSince(const Channel& channel, uint64_t now) const {
  if (!channel.counting || now < channel.start) return 0;
  return static_cast<uint64_t>(static_cast<unsigned __int128>(now - channel.start) * HZ /
                               1000000000u);
}

uint64_t Pit::periodNs(const Channel& channel) const {
  return static_cast<uint64_t>(static_cast<unsigned __int128>(channel.reload) * 1000000000u / HZ);
}

uint16_t Pit::count(const Channel& channel, uint64_t now) const {
  uint64_t ticks = ticksSince(channel, now);
  if (channel.mode == 2 || channel.mode == 3) {
    return static_cast<uint16_t>(channel.reload - ticks % channel.reload);
  }
  return static_cast<uint16_t>(channel.reload - ticks);  // counts on through zero (wraps)
}

bool Pit::output(const Channel& channel, uint64_t now) const {
  uint64_t ticks = ticksSince(channel, now);
  switch (channel.mode) {
    case 2:
      return ticks % channel.reload != channel.reload - 1;
    case 3:
      return ticks % channel.reload < (channel.reload + 1) / 2;
    default:
      return channel.counting && ticks >= channel.reload;
  }
}

void Pit::load(unsigned index, uint64_t now) {
  Channel& channel = channels[index];
  channel.start = now;
  channel.counting = index != 2 || gate2;
  if (index == 0) channel.nextIrq = now + periodNs(channel);
}

uint64_t Pit::poll() {
  bool fire = false;
  uint64_t next;
  {
    std::lock_guard<std::mutex> guard(lock);
    Channel& channel = channels[0];
    uint64_t now = clock();
    if (channel.counting && now >= channel.nextIrq) {
      fire = true;
      if (channel.mode == 2 || channel.mode == 3) {
        uint64_t period = periodNs(channel);
        if (period == 0) period = 1;
        channel.nextIrq += period;
        if (channel.nextIrq <= now) channel.nextIrq = now + period;  // missed ticks are lost
      } else {
        channel.nextIrq = UINT64_MAX;  // one-shot
      }
    }
    next = channel.counting ? channel.nextIrq : UINT64_MAX;
  }
  if (fire) pulse();
  return next;
}

uint64_t Pit::read(Space, uint64_t address, unsigned) {
  std::lock_guard<std::mutex> guard(lock);
  uint64_t now = clock();
  if (address == 0x61) {
    refresh = !refresh;  // bit 4 toggles, as DRAM refresh did; firmware delays spin on it
    return (port61 & 3) | (refresh ? 0x10 : 0) | (output(channels[2], now) ? 0x20 : 0);
  }
  if (address == 0x43) return 0xff;
  Channel& channel = channels[address - 0x40];
  uint16_t value = channel.latched ? channel.latch : count(channel, now);
  uint8_t byte;
  if (channel.access == 1) {
    byte = value & 0xff;
    channel.latched = false;
  } else if (channel.access == 2) {
    byte = value >> 8;
    channel.latched = false;
  } else {
    byte = channel.readHigh ? value >> 8 : value & 0xff;
    if (channel.readHigh) channel.latched = false;
    channel.readHigh = !channel.readHigh;
  }
  return byte;
}

void Pit::write(Space, uint64_t address, unsigned, uint64_t value, bool) {
  std::lock_guard<std::mutex> guard(lock);
  uint64_t now = clock();
  uint8_t byte = static_cast<uint8_t>(value);
  if (address == 0x61) {
    bool gate = byte & 1;
    bool rising = gate && !gate2;
    gate2 = gate;
    if (rising) load(2, now);  // a rising gate restarts channel 2's count
    if (!gate) channels[2].counting = false;
    port61 = byte & 0x0f;
    return;
  }
  if (address == 0x43) {
    unsigned index = byte >> 6;
    if (index == 3) {  // read-back: latch the counts of the channels named (status not kept)
      for (unsigned i = 0; i < 3; ++i) {
        if ((byte & (2 << i)) && !(byte & 0x20)) {
          channels[i].latch = count(channels[i], now);
          channels[i].latched = true;
          channels[i].readHigh = false;
        }
      }
      return;
    }
    Channel& channel = channels[index];
    unsigned access = (byte >> 4) & 3;
    if (access == 0) {  // counter latch
      channel.latch = count(channel, now);
      channel.latched = true;
      channel.readHigh = false;
      return;
    }
    channel.access = static_cast<uint8_t>(access);
    channel.mode = (byte >> 1) & 7;
    if (channel.mode >= 6) channel.mode -= 4;  // 6 and 7 are 2 and 3
    if (channel.mode == 1 || channel.mode >= 4) channel.mode = 0;
    channel.writeHigh = channel.readHigh = channel.latched = false;
    channel.counting = false;
    if (index == 0) channel.nextIrq = UINT64_MAX;
    return;
  }
  unsigned index = static_cast<unsigned>(address - 0x40);
  Channel& channel = channels[index];
  uint32_t reload;
  if (channel.access == 1) {
    reload = byte;
  } else if (channel.access == 2) {
    reload = static_cast<uint32_t>(byte) << 8;
  } else if (!channel.writeHigh) {
    channel.pendingLow = byte;
    channel.writeHigh = true;
    return;
  } else {
    reload = channel.pendingLow | (static_cast<uint32_t>(byte) << 8);
    channel.writeHigh = false;
  }
  channel.reload = reload == 0 ? 0x10000 : reload;
  load(index, now);
}

}  // namespace bulkhead::irqchip
