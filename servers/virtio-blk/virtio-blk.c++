#include "servers/virtio-blk/virtio-blk.h"

#include <liburing.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>

#include <kj/debug.h>

#include "chain-io.h"

namespace bulkhead {

namespace {

constexpr uint32_t T_IN = 0;
constexpr uint32_t T_OUT = 1;
constexpr uint32_t T_FLUSH = 4;
constexpr uint32_t T_GET_ID = 8;
constexpr uint8_t S_OK = 0;
constexpr uint8_t S_IOERR = 1;
constexpr uint8_t S_UNSUPP = 2;
constexpr uint64_t F_SEG_MAX = 1ull << 2;
constexpr uint64_t F_RO = 1ull << 5;
constexpr uint64_t F_BLK_SIZE = 1ull << 6;
constexpr uint64_t F_FLUSH = 1ull << 9;
constexpr uint32_t SEG_MAX = 254;
constexpr uint64_t HEADER_BYTES = 16;
constexpr size_t ID_BYTES = 20;

class UringBackend final : public BlockBackend {
 public:
  explicit UringBackend(int fd) : fd(fd) {
    int result = io_uring_queue_init(8, &ring, 0);
    KJ_REQUIRE(result == 0, "io_uring_queue_init failed", strerror(-result));
  }
  ~UringBackend() override { io_uring_queue_exit(&ring); }

  bool read(uint64_t offset, const std::vector<iovec>& buffers) override {
    return transfer(false, offset, buffers);
  }
  bool write(uint64_t offset, const std::vector<iovec>& buffers) override {
    return transfer(true, offset, buffers);
  }
  bool flush() override {
    io_uring_sqe* sqe = io_uring_get_sqe(&ring);
    io_uring_prep_fsync(sqe, fd, IORING_FSYNC_DATASYNC);
    int result = complete();
    if (result != 0) report("flush", 0, result);
    return result == 0;
  }

 private:
  bool transfer(bool write, uint64_t offset, std::vector<iovec> buffers) {
    // A short transfer is continued where it stopped (the host may split it).
    size_t first = 0;
    while (first < buffers.size()) {
      io_uring_sqe* sqe = io_uring_get_sqe(&ring);
      const iovec* list = buffers.data() + first;
      unsigned count = std::min<size_t>(buffers.size() - first, IOV_MAX);
      if (write) {
        io_uring_prep_writev(sqe, fd, list, count, offset);
      } else {
        io_uring_prep_readv(sqe, fd, list, count, offset);
      }
      int done = complete();
      if (done <= 0) {  // error, or end of file
        report(write ? "write" : "read", offset, done);
        return false;
      }
      offset += done;
      size_t left = done;
      while (first < buffers.size() && left >= buffers[first].iov_len) {
        left -= buffers[first].iov_len;
        ++first;
      }
      if (left > 0) {
        buffers[first].iov_base = static_cast<uint8_t*>(buffers[first].iov_base) + left;
        buffers[first].iov_len -= left;
      }
    }
    return true;
  }

  // The first few host failures go to stderr (the guest sees IOERR for each).
  void report(const char* what, uint64_t offset, int result) {
    if (reported >= 10) return;
    ++reported;
    fprintf(stderr, "virtio-blk: %s at byte %llu failed on the host: %s\n", what,
            static_cast<unsigned long long>(offset),
            result == 0 ? "end of file" : strerror(-result));
  }

  int complete() {
    int submitted = io_uring_submit_and_wait(&ring, 1);
    if (submitted < 0) return submitted;
    io_uring_cqe* cqe = nullptr;
    int result = io_uring_wait_cqe(&ring, &cqe);
    if (result < 0) return result;
    result = cqe->res;
    io_uring_cqe_seen(&ring, cqe);
    return result;
  }

  int fd;
  io_uring ring;
  unsigned reported = 0;
};

}  // namespace

std::unique_ptr<BlockBackend> makeUringBackend(int fd) {
  return std::make_unique<UringBackend>(fd);
}

VirtioBlk::VirtioBlk(std::unique_ptr<BlockBackend> backend, uint64_t bytes, bool readOnly,
                     std::string serial)
    : backend(std::move(backend)),
      sectors(bytes / SECTOR),
      readOnly(readOnly),
      serial(std::move(serial)) {}

uint64_t VirtioBlk::features() const {
  return F_SEG_MAX | F_BLK_SIZE | F_FLUSH | (readOnly ? F_RO : 0);
}

std::vector<uint8_t> VirtioBlk::config() const {
  // struct virtio_blk_config up to blk_size: capacity, size_max, seg_max, geometry, blk_size.
  std::vector<uint8_t> bytes(24, 0);
  memcpy(&bytes[0], &sectors, 8);
  memcpy(&bytes[12], &SEG_MAX, 4);
  uint32_t blockSize = SECTOR;
  memcpy(&bytes[20], &blockSize, 4);
  return bytes;
}

int64_t VirtioBlk::serve(unsigned, const sdk::virtio::Chain& chain, const sdk::DmaMemory& memory) {
  struct {
    uint32_t type;
    uint32_t reserved;
    uint64_t sector;
  } header;
  if (chain.readableBytes < HEADER_BYTES || chain.writableBytes < 1 ||
      !sdk::virtio::readChain(memory, chain, 0, &header, sizeof(header))) {
    return -1;
  }
  // The status byte is the writable stream's last byte.
  uint64_t statusAt = chain.writableBytes - 1;
  uint64_t dataBytes = header.type == T_IN ? statusAt : chain.readableBytes - HEADER_BYTES;
  bool malformed = false;
  uint8_t status = execute(header.type, header.sector, chain, memory, dataBytes, &malformed);
  if (malformed || !sdk::virtio::writeChain(memory, chain, statusAt, &status, 1)) return -1;
  return header.type == T_IN || header.type == T_GET_ID ? chain.writableBytes : 1;
}

uint8_t VirtioBlk::execute(uint32_t type, uint64_t sector, const sdk::virtio::Chain& chain,
                           const sdk::DmaMemory& memory, uint64_t dataBytes, bool* malformed) {
  switch (type) {
    case T_IN:
    case T_OUT: {
      if (type == T_OUT && readOnly) return S_IOERR;
      if (dataBytes % SECTOR != 0 || sector > sectors || dataBytes / SECTOR > sectors - sector) {
        return S_IOERR;
      }
      std::vector<iovec> buffers;
      bool writable = type == T_IN;
      uint64_t from = writable ? 0 : HEADER_BYTES;
      if (!sdk::virtio::chainSlices(memory, chain, writable, from, dataBytes, buffers)) {
        *malformed = true;
        return S_IOERR;
      }
      if (dataBytes == 0) return S_OK;
      // The transfer between the disk and guest RAM, as the fault plan lets it happen.
      sdk::DmaFault fault =
          memory.transfer(sdk::virtio::streamAddress(chain, writable, from), dataBytes, writable);
      if (fault.refuse) return S_IOERR;
      sdk::virtio::truncateSlices(buffers, fault.keep);
      if (buffers.empty()) return S_OK;
      bool done;
      if (writable) {
        done = backend->read(sector * SECTOR, buffers);
        sdk::virtio::flipSlices(buffers, fault.flip);
      } else {
        // The device owns the buffer until it completes the chain: flip it for the write and
        // put it back.
        sdk::virtio::flipSlices(buffers, fault.flip);
        done = backend->write(sector * SECTOR, buffers);
        sdk::virtio::flipSlices(buffers, fault.flip);
      }
      return done ? S_OK : S_IOERR;
    }
    case T_FLUSH:
      return backend->flush() ? S_OK : S_IOERR;
    case T_GET_ID: {
      char id[ID_BYTES] = {};
      memcpy(id, serial.data(), std::min(serial.size(), ID_BYTES));
      uint64_t room = chain.writableBytes - 1;
      if (room < ID_BYTES) return S_IOERR;
      if (!sdk::virtio::writeChain(memory, chain, 0, id, ID_BYTES)) *malformed = true;
      return S_OK;
    }
    default:
      return S_UNSUPP;
  }
}

}  // namespace bulkhead
