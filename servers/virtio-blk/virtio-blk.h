// virtio-blk (virtio spec 5.2): one request queue over a raw disk image.
//
// Contract: requests are served in order, each to completion before the next (reads and
// writes go to the image through io_uring), so completion order is avail order and the
// transport's recovery rule holds (virtio-pci.h). Supported: IN, OUT, FLUSH (fdatasync of the
// image), GET_ID; anything else answers UNSUPP. A request past the end of the disk, not a
// whole number of sectors, or failing on the host answers IOERR; a write to a read-only disk
// answers IOERR too (and the device offers VIRTIO_BLK_F_RO). A malformed chain (no room for the
// header or the status byte) breaks the queue.
#pragma once

#include <sys/uio.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "virtio-pci.h"

namespace bulkhead {

// Where the sectors live. Offsets and lengths are in bytes.
class BlockBackend {
 public:
  virtual ~BlockBackend() = default;
  // Each returns whether the whole transfer happened.
  virtual bool read(uint64_t offset, const std::vector<iovec>& buffers) = 0;
  virtual bool write(uint64_t offset, const std::vector<iovec>& buffers) = 0;
  virtual bool flush() = 0;
};

// io_uring over an image file descriptor (not owned).
std::unique_ptr<BlockBackend> makeUringBackend(int fd);

class VirtioBlk final : public sdk::virtio::VirtioModel {
 public:
  static constexpr uint64_t SECTOR = 512;

  VirtioBlk(std::unique_ptr<BlockBackend> backend, uint64_t bytes, bool readOnly,
            std::string serial);

  uint16_t deviceType() const override { return 2; }
  uint32_t classCode() const override { return 0x018000; }
  uint64_t features() const override;
  unsigned queueCount() const override { return 1; }
  std::vector<uint8_t> config() const override;
  int64_t serve(unsigned queue, const sdk::virtio::Chain& chain,
                const sdk::DmaMemory& memory) override;

 private:
  uint8_t execute(uint32_t type, uint64_t sector, const sdk::virtio::Chain& chain,
                  const sdk::DmaMemory& memory, uint64_t dataBytes, bool* malformed);

  std::unique_ptr<BlockBackend> backend;
  uint64_t sectors;
  bool readOnly;
  std::string serial;
};

}  // namespace bulkhead
