// The SIMT executor (executor.hpp, docs/simt.md): each CUDA thread of a cluster is a fiber
// (Boost.Context); a seeded scheduler runs the ready fibers one at a time, each from one
// synchronisation point to the next. Every access of the dialect comes here first: it is
// checked (bounds, alignment, shared-memory races by vector clocks, uninitialised shared bytes,
// cp.async completion, cross-block global writes), counted and grouped into warp-level requests
// for the traffic and bank tables.
#include "v4ref/cuda/simt/executor.hpp"
#include "v4ref/ref/core/formats.hpp"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <boost/context/fiber.hpp>
#include <boost/context/stack_context.hpp>
#include <cmath>
#include <cinttypes>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <sstream>
#include <unordered_map>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#define V4REF_SIMT_ASAN 1
#endif

namespace v4ref::cuda::simt {
namespace {

namespace bctx = boost::context;

constexpr std::uint32_t kNone = 0xffffffffu;
// Guard zone before and after each block's dynamic shared memory, and the alignment of its base:
// 1024 bytes, as the device's `extern __shared__ __align__(1024)` buffer (the atom of a 128-byte
// swizzled tile).
constexpr std::size_t kSmemGuard = 1024;
constexpr std::size_t kMaxSmem = 232448;  // 227 KiB: sm_90's opt-in maximum per block
constexpr std::size_t kStackBytes = 256 * 1024;
// guide/kernel-targets.md §1: HBM, dense BF16 / FP8 tensor and FP32 non-tensor peaks (the same
// for H100 SXM and H200 but the bandwidth).
constexpr double kHbmH100 = 3.35e12, kHbmH200 = 4.8e12, kBf16Peak = 989e12, kFp8Peak = 1979e12,
                 kFp32Peak = 67e12;

std::size_t page_size() {
  static const auto p = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
  return p;
}

// ---------------------------------------------------------------- global buffers

struct Registry {
  std::mutex mu;
  std::map<std::uintptr_t, BufferBase*> bodies;  // body begin -> buffer
  std::map<std::string, std::unique_ptr<Buffer<unsigned char>>> device_arrays;
};
Registry& registry() {
  static auto* r = new Registry;  // never destroyed: buffers may outlive static destruction order
  return *r;
}

constexpr unsigned char kGuardPattern = 0xA5;

// ---------------------------------------------------------------- sites

struct SiteInfo {
  std::string name;
  std::string space, op;
  int bytes = 0;
};

class Sites {
 public:
  std::uint32_t intern(const std::source_location& loc) {
    const Key k{loc.file_name(), loc.line(), loc.column()};
    const auto it = ids_.find(k);
    if (it != ids_.end()) return it->second;
    const auto id = static_cast<std::uint32_t>(info_.size());
    std::string file = std::filesystem::path(loc.file_name()).lexically_normal().string();
    for (const char* top : {"/cuda/", "/tests/", "/bench/"})  // relative to the source tree
      if (const auto at = file.rfind(top); at != std::string::npos) {
        file = file.substr(at + 1);
        break;
      }
    info_.push_back({file + ":" + std::to_string(loc.line()) + ":" + std::to_string(loc.column()),
                     "", "", 0});
    ids_.emplace(k, id);
    return id;
  }
  SiteInfo& at(std::uint32_t id) { return info_[id]; }
  const std::string& name(std::uint32_t id) const {
    static const std::string none = "(unknown site)";
    return id < info_.size() ? info_[id].name : none;
  }
  std::size_t size() const { return info_.size(); }

 private:
  struct Key {
    const char* file;
    std::uint32_t line, col;
    bool operator==(const Key& o) const { return file == o.file && line == o.line && col == o.col; }
  };
  struct Hash {
    std::size_t operator()(const Key& k) const {
      return std::hash<const void*>()(k.file) ^ (std::size_t{k.line} << 20) ^ k.col;
    }
  };
  std::unordered_map<Key, std::uint32_t, Hash> ids_;
  std::vector<SiteInfo> info_;
};

// ---------------------------------------------------------------- stacks

class StackPool {
 public:
  ~StackPool() {
    for (auto& s : free_) munmap(static_cast<char*>(s.sp) - s.size - page_size(), s.size + page_size());
  }
  bctx::stack_context get() {
    if (!free_.empty()) {
      const bctx::stack_context s = free_.back();
      free_.pop_back();
      return s;
    }
    const std::size_t total = kStackBytes + page_size();
    void* base = mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED) throw Error("simt: cannot map a fiber stack");
    mprotect(base, page_size(), PROT_NONE);  // guard page below the stack
    bctx::stack_context s;
    s.size = kStackBytes;
    s.sp = static_cast<char*>(base) + total;
    return s;
  }
  void put(const bctx::stack_context& s) { free_.push_back(s); }

 private:
  std::vector<bctx::stack_context> free_;
};

StackPool& stack_pool() {
  static StackPool pool;
  return pool;
}

// ---------------------------------------------------------------- execution state

struct Aborted {};  // unwinds a thread's fiber when the launch stops

struct Epoch {
  std::uint32_t tid = kNone, clk = 0, site = 0;
};
// The shadow state of a 4-byte word of shared memory, or of one byte of a word that some access
// covered only in part (the word is then "split" into four byte cells for good).
struct Cell {
  Epoch w, r;
  std::uint32_t more = 0;         // 1 + index of the concurrent-reads list, 0: none
  std::uint32_t pending = kNone;  // thread whose cp.async into these bytes has not completed
  bool atomic = false;
  bool split = false;             // word cells only: see Block::bytes
  std::uint8_t layout = 0xFF;     // swizzle of the TMA copy that wrote these bytes; 0xFF: other
  bool generic = false;           // last written through the generic proxy (st.shared, cp.async)
};

struct Copy {
  unsigned char* dst;
  const unsigned char* src;
  std::size_t bytes;
  std::uint32_t site;
};

enum class State : std::uint8_t { kReady, kRunning, kBlocked, kDone };

struct Thread {
  std::uint32_t id = 0;     // in the cluster
  std::uint32_t block = 0;  // rank in the cluster
  idx3 tidx;
  std::uint32_t linear = 0, warp = 0, lane = 0;
  State state = State::kReady;
  bctx::fiber fiber, sched;
  bctx::stack_context stack{};
  void* fake = nullptr;
  std::vector<std::uint32_t> vc;
  std::string waiting;
  std::uint32_t wait_site = 0;
  std::vector<Copy> open;
  std::deque<std::vector<Copy>> groups;
  std::uint32_t arrives = 0, waits = 0;
  std::vector<std::uint32_t> occurrences;  // [site] executions so far
  std::uint64_t result = 0;
  std::vector<std::uint32_t> proxy_fences;  // own clock at each fence.proxy.async, ascending
};

struct Bar {
  int expected = -1, arrived = 0;
  std::uint32_t site = 0;
  std::vector<Thread*> waiters;
  std::vector<std::uint32_t> join;
};

enum class CollKind : std::uint8_t { kIdle, kShfl, kVote, kSyncWarp };

struct Coll {
  CollKind kind = CollKind::kIdle;
  int sub = 0, words = 1, width = 32;
  unsigned mask = 0, arrived = 0;
  std::uint32_t site = 0;
  std::uint64_t bits[32] = {};
  int arg[32] = {};
  std::vector<Thread*> waiters;
};

// A bulk or TMA copy in flight: its bytes land when the phase of its mbarrier completes. The
// destination range [dst, dst + bytes) is filled by segments (source bytes, or zeros for
// out-of-bounds elements of a TMA box), in shared-memory order after any swizzle.
struct CopySegment {
  std::uint32_t dst_off;         // from dst
  const unsigned char* src;      // null: zeros
  std::uint32_t bytes;
};
struct BulkCopy {
  unsigned char* dst;
  std::size_t bytes;
  std::vector<CopySegment> segs;
  std::uint32_t site, issuer;
  std::vector<std::uint32_t> vc;  // the issuer's clock at the issue
};

// An mbarrier: arrival count and transaction bytes of the current phase (§ PTX mbarrier).
struct MBar {
  std::uint32_t expected = 0, pending = 0;
  std::int64_t tx = 0;
  std::uint32_t phase = 0;  // completed phases
  Epoch init;
  std::vector<std::uint32_t> join;        // release clocks of the current phase
  std::vector<std::uint32_t> done_vc[2];  // clocks of the last completed phase of each parity
  std::vector<std::pair<Thread*, unsigned>> waiters;
  std::vector<BulkCopy> copies;
};

struct Block {
  idx3 bidx;
  std::uint32_t grid_linear = 0;
  unsigned char* smem = nullptr;
  std::vector<Cell> words;                                    // one per 4 bytes
  std::unordered_map<std::size_t, std::array<Cell, 4>> bytes;  // split words
  Bar bars[16];
  std::vector<Coll> warps;
  std::uint32_t live = 0;
  std::uint32_t first_thread = 0;
  // DSMEM accesses into this block by threads of other blocks: the latest per accessing thread.
  // Each must happen before this block exits (a cluster barrier after the last remote access).
  std::unordered_map<std::uint32_t, Epoch> remote;
  std::unordered_map<std::size_t, MBar> mbars;  // by shared offset
  // wgmma in flight per warpgroup: the issued operands and each thread's accumulators
  struct Wgmma {
    int arrived = 0, n = 0;
    detail::MmaType type = detail::MmaType::kBf16;
    std::uint64_t da = 0, db = 0;
    bool accumulate = false;
    std::uint32_t site = 0;
    std::array<float*, 128> d{};
    std::vector<Thread*> waiters;
  };
  std::vector<Wgmma> wgmma;
};

// One warp-level instruction: the accesses of its lanes (the k-th execution of a site by each
// lane of a warp forms the k-th request of that site).
struct Request {
  std::uint32_t n = 0;
  std::array<std::uint64_t, 32> lanes;  // lane << 56 | bytes << 48 | address (48 bits)
};

struct SiteAcc {
  std::uint64_t requests = 0, lanes = 0, sectors = 0, ways_sum = 0;
  int worst = 0;
};

struct Run {
  const LaunchConfig* cfg = nullptr;
  const RunOptions* opt = nullptr;
  const std::function<void()>* kernel = nullptr;
  LaunchReport report;
  Sites sites;
  std::mt19937_64 rng;
  bool aborting = false;
  std::uint64_t idle_polls = 0;  // failed mbarrier polls since the last operation of any thread
  std::uint64_t alu[5] = {};     // thread-level fp32 operations by detail::Alu
  std::set<std::string> seen;  // de-duplicated findings (kind + sites)
  std::unordered_map<const BufferBase*, std::vector<std::uint32_t>> global_writers;
  std::vector<std::vector<std::vector<Request>>> requests;  // [warp of the cluster][site][k]
  std::vector<SiteAcc> acc;                                 // [site], over the launch
  // the cluster now running
  std::vector<Block> blocks;
  std::vector<Thread> threads;
  std::vector<Thread*> ready;
  std::vector<unsigned char> arena;  // the cluster's shared memory, guards included
  unsigned char* arena_base = nullptr;  // 1024-byte aligned start inside `arena`
  std::size_t arena_bytes = 0;
  std::size_t block_stride = 0;
  std::vector<std::vector<Epoch>> read_lists;
  std::vector<std::uint32_t> free_read_lists;
  std::uint32_t threads_per_block = 0, warps_per_block = 0;
  // cluster barrier
  std::vector<std::uint32_t> cl_count;                 // [phase] threads that arrived
  std::vector<std::vector<std::uint32_t>> cl_vc;       // [phase] joined release clocks
  std::vector<std::vector<Thread*>> cl_waiters;        // [phase]
  std::vector<std::uint32_t> cl_done_arrives;          // arrive counts of exited threads
  // ASan bookkeeping of the scheduler's stack
  void* sched_fake = nullptr;
  const void* sched_bottom = nullptr;
  std::size_t sched_size = 0;
};

Run* g_run = nullptr;
Thread* g_cur = nullptr;

Run& run() {
  if (g_run == nullptr) throw Error("simt: a dialect function was called outside simt::launch");
  return *g_run;
}
Thread& cur() {
  if (g_cur == nullptr) throw Error("simt: a dialect function was called outside a kernel thread");
  return *g_cur;
}

std::string str(idx3 v) {
  return "(" + std::to_string(v.x) + "," + std::to_string(v.y) + "," + std::to_string(v.z) + ")";
}

std::string who(const Thread& t) {
  const Run& r = run();
  const Block& b = r.blocks[t.block];
  return "block " + str(b.bidx) + " thread " + str(t.tidx) + " (warp " + std::to_string(t.warp) +
         ", lane " + std::to_string(t.lane) + ")";
}

void finding(const std::string& kind, const std::string& dedupe, const std::string& message) {
  Run& r = run();
  if (!r.seen.insert(kind + "|" + dedupe).second) return;
  r.report.findings.push_back({kind, r.cfg->kernel + ": " + message});
  if (static_cast<int>(r.report.findings.size()) >= r.opt->max_findings) r.aborting = true;
}

void check_abort() {
  if (run().aborting) throw Aborted{};
}

// ---------------------------------------------------------------- fiber switches

void asan_start(void** fake, const void* bottom, std::size_t size) {
#if defined(V4REF_SIMT_ASAN)
  __sanitizer_start_switch_fiber(fake, bottom, size);
#else
  (void)fake, (void)bottom, (void)size;
#endif
}
void asan_finish(void* fake, const void** bottom, std::size_t* size) {
#if defined(V4REF_SIMT_ASAN)
  __sanitizer_finish_switch_fiber(fake, bottom, size);
#else
  (void)fake, (void)bottom, (void)size;
#endif
}

struct PoolAlloc {
  Thread* t;
  bctx::stack_context allocate() {
    t->stack = stack_pool().get();
    return t->stack;
  }
  void deallocate(bctx::stack_context& s) { stack_pool().put(s); }
};

void on_thread_exit(Thread& t);

bctx::fiber thread_main(Thread* t, bctx::fiber&& sched) {
  Run& r = *g_run;
  t->sched = std::move(sched);
  asan_finish(nullptr, &r.sched_bottom, &r.sched_size);
  try {
    (*r.kernel)();
  } catch (const Aborted&) {
  } catch (const std::exception& e) {
    finding("kernel_exception", e.what(), who(*t) + ": the kernel threw: " + e.what());
  }
  on_thread_exit(*t);
  t->state = State::kDone;
  asan_start(nullptr, r.sched_bottom, r.sched_size);
  return std::move(t->sched);
}

// From the scheduler: run t until it blocks, yields or exits.
void switch_to(Thread& t) {
  Run& r = *g_run;
  g_cur = &t;
  t.state = State::kRunning;
  if (!t.fiber) {
    Thread* tp = &t;
    t.fiber = bctx::fiber(std::allocator_arg, PoolAlloc{tp},
                          [tp](bctx::fiber&& s) { return thread_main(tp, std::move(s)); });
    // The stack is allocated by the constructor: PoolAlloc recorded it in t.stack.
  }
  asan_start(&r.sched_fake, static_cast<char*>(t.stack.sp) - t.stack.size, t.stack.size);
  t.fiber = std::move(t.fiber).resume();
  asan_finish(r.sched_fake, nullptr, nullptr);
  g_cur = nullptr;
}

// From a thread: give control back to the scheduler (state set by the caller).
void yield_to_scheduler() {
  Run& r = *g_run;
  Thread& t = cur();
  asan_start(&t.fake, r.sched_bottom, r.sched_size);
  t.sched = std::move(t.sched).resume();
  asan_finish(t.fake, &r.sched_bottom, &r.sched_size);
  g_cur = &t;
  if (r.aborting) throw Aborted{};
}

void make_ready(Thread& t) {
  t.state = State::kReady;
  t.waiting.clear();
  g_run->ready.push_back(&t);
}

void block_here(const std::string& what, std::uint32_t site) {
  Thread& t = cur();
  t.state = State::kBlocked;
  t.waiting = what;
  t.wait_site = site;
  yield_to_scheduler();
}

// A sync point that did not block: let other ready threads run first (seeded interleaving).
void yield_ready() {
  make_ready(cur());
  yield_to_scheduler();
}

// ---------------------------------------------------------------- vector clocks

void join_into(std::vector<std::uint32_t>& dst, const std::vector<std::uint32_t>& src) {
  if (src.empty()) return;  // nothing released yet (e.g. the phase before an mbarrier's first)
  if (dst.empty()) {
    dst = src;
    return;
  }
  for (std::size_t i = 0; i < dst.size(); ++i) dst[i] = std::max(dst[i], src[i]);
}

bool before(const Epoch& e, const std::vector<std::uint32_t>& vc) {
  return e.tid == kNone || e.clk <= vc[e.tid];
}

// ---------------------------------------------------------------- analysis

std::uint32_t site_of(const std::source_location& loc, const char* space, const char* op, int bytes) {
  Run& r = run();
  const std::uint32_t id = r.sites.intern(loc);
  SiteInfo& s = r.sites.at(id);
  if (s.space.empty()) {
    s.space = space;
    s.op = op;
    s.bytes = bytes;
  }
  return id;
}

void record(std::uint32_t site, const void* addr, std::size_t bytes) {
  Run& r = run();
  Thread& t = cur();
  r.idle_polls = 0;  // an operation: progress (a failed poll restores its count, mbar_wait)
  if (t.occurrences.size() <= site) t.occurrences.resize(site + 1, 0);
  const std::uint32_t k = t.occurrences[site]++;
  auto& per_site = r.requests[t.block * r.warps_per_block + t.warp];
  if (per_site.size() <= site) per_site.resize(site + 1);
  auto& reqs = per_site[site];
  if (reqs.size() <= k) reqs.resize(k + 1);
  Request& q = reqs[k];
  if (r.opt->analysis && addr != nullptr && q.n < 32)
    q.lanes[q.n] = (std::uint64_t{t.lane} << 56) | (std::uint64_t{bytes & 0xff} << 48) |
                   (reinterpret_cast<std::uintptr_t>(addr) & 0xffffffffffffull);
  ++q.n;
}

const char* op_name(detail::Op op) {
  switch (op) {
    case detail::Op::kLoad: return "ld";
    case detail::Op::kLoadNc: return "ld.nc";
    case detail::Op::kLoadCg: return "ld.cg";
    case detail::Op::kStore: return "st";
    case detail::Op::kAtomic: return "atom";
  }
  return "?";
}

// ---------------------------------------------------------------- global memory

std::string hex(std::uintptr_t a) {
  char b[32];
  std::snprintf(b, sizeof b, "0x%" PRIxPTR, a);
  return b;
}

// The live buffer holding [a, a + n), or nullptr with `why` set.
BufferBase* find_buffer(std::uintptr_t a, std::size_t n, std::string* why,
                        std::uintptr_t* begin) {
  Registry& reg = registry();
  auto it = reg.bodies.upper_bound(a);
  BufferBase* below = nullptr;
  std::uintptr_t below_begin = 0;
  if (it != reg.bodies.begin()) {
    const auto p = std::prev(it);
    below = p->second;
    below_begin = p->first;
  }
  if (below != nullptr && a >= below_begin && a + n <= below_begin + below->bytes()) {
    *begin = below_begin;
    return below;
  }
  if (below != nullptr && a >= below_begin && a < below_begin + below->bytes() + BufferBase::kGuardBytes) {
    *why = std::to_string(n) + " bytes at offset " + std::to_string(a - below_begin) +
           " of buffer '" + below->name() + "' (" + std::to_string(below->bytes()) +
           " bytes): past its end";
    return nullptr;
  }
  if (it != reg.bodies.end() && a + BufferBase::kGuardBytes >= it->first) {
    *why = std::to_string(n) + " bytes at " + std::to_string(it->first - a) +
           " bytes before buffer '" + it->second->name() + "'";
    return nullptr;
  }
  *why = std::to_string(n) + " bytes at " + hex(a) + ", which is in no live buffer";
  return nullptr;
}

bool aligned(std::uintptr_t a, std::size_t n) {
  const std::size_t need = (n == 1 || n == 2 || n == 4 || n == 8 || n == 16) ? n : 1;
  return a % need == 0;
}

}  // namespace

// ---------------------------------------------------------------- dialect entry points

namespace detail {

bool global_access(const void* addr, std::size_t bytes, Op op, const Loc& loc) {
  check_abort();
  Run& r = run();
  Thread& t = cur();
  const std::uint32_t site = site_of(loc, "global", op_name(op), static_cast<int>(bytes));
  const auto a = reinterpret_cast<std::uintptr_t>(addr);
  std::string why;
  std::uintptr_t buf_begin = 0;
  BufferBase* buf = find_buffer(a, bytes, &why, &buf_begin);
  if (buf == nullptr) {
    finding("out_of_bounds", r.sites.name(site),
            who(t) + ": global " + op_name(op) + " of " + why + " at " + r.sites.name(site));
    return false;
  }
  if (!aligned(a, bytes)) {
    finding("misaligned", r.sites.name(site),
            who(t) + ": global " + op_name(op) + " of " + std::to_string(bytes) +
                " bytes at a misaligned address " + hex(a) + " (buffer '" + buf->name() +
                "') at " + r.sites.name(site));
    return false;
  }
  if (op == Op::kStore || op == Op::kAtomic) {
    auto& w = r.global_writers[buf];
    if (w.empty()) w.assign(buf->bytes(), 0);
    const std::uint32_t me = r.blocks[t.block].grid_linear + 1;
    const std::size_t base = a - buf_begin;
    const bool atomic = op == Op::kAtomic;
    for (std::size_t i = 0; i < bytes; ++i) {
      std::uint32_t& cell = w[base + i];
      const std::uint32_t owner = cell & 0x7fffffffu;
      const bool was_atomic = (cell & 0x80000000u) != 0;
      if (owner != 0 && owner != me && !(atomic && was_atomic)) {
        finding("global_write_conflict", buf->name() + r.sites.name(site),
                who(t) + ": writes byte " + std::to_string(base + i) + " of buffer '" +
                    buf->name() + "' at " + r.sites.name(site) + ", which block " +
                    std::to_string(owner - 1) + " (linear) also wrote in this launch " +
                    (atomic || was_atomic ? "(an atomic and a plain write)" : "without atomics"));
        break;
      }
      cell = me | (atomic ? 0x80000000u : 0u);
    }
  }
  record(site, addr, bytes);
  return true;
}

}  // namespace detail

namespace {

// The block of the running cluster whose shared memory holds [a, a + n), or -1 with `why`.
int find_smem_block(std::uintptr_t a, std::size_t n, std::string* why, std::size_t* offset) {
  Run& r = run();
  const auto base = reinterpret_cast<std::uintptr_t>(r.arena_base);
  if (a < base || a >= base + r.arena_bytes) {
    *why = std::to_string(n) + " bytes at " + hex(a) + ", outside the cluster's shared memory";
    return -1;
  }
  const std::size_t rel = a - base;
  const auto blk = static_cast<int>(rel / r.block_stride);
  const std::size_t in = rel % r.block_stride;
  const std::size_t size = r.cfg->smem_bytes;
  if (in < kSmemGuard) {
    *why = std::to_string(n) + " bytes at " + std::to_string(kSmemGuard - in) +
           " bytes before the dynamic shared memory of cluster rank " + std::to_string(blk);
    return -1;
  }
  *offset = in - kSmemGuard;
  if (*offset + n > size) {
    *why = std::to_string(n) + " bytes at shared offset " + std::to_string(*offset) +
           " of cluster rank " + std::to_string(blk) + ", past the " + std::to_string(size) +
           " bytes of dynamic shared memory";
    return -1;
  }
  return blk;
}

std::uint32_t new_read_list() {
  Run& r = run();
  if (!r.free_read_lists.empty()) {
    const std::uint32_t i = r.free_read_lists.back();
    r.free_read_lists.pop_back();
    r.read_lists[i].clear();
    return i;
  }
  r.read_lists.emplace_back();
  return static_cast<std::uint32_t>(r.read_lists.size() - 1);
}

// Keeps the latest read of each thread (a thread's later read subsumes its earlier ones).
void compact(std::vector<Epoch>& list) {
  std::sort(list.begin(), list.end(), [](const Epoch& a, const Epoch& b) {
    return a.tid != b.tid ? a.tid < b.tid : a.clk > b.clk;
  });
  list.erase(std::unique(list.begin(), list.end(),
                         [](const Epoch& a, const Epoch& b) { return a.tid == b.tid; }),
             list.end());
}

std::string thread_name(std::uint32_t tid) {
  Run& r = run();
  if (tid >= r.threads.size()) return "thread ?";
  return who(r.threads[tid]);
}

// The cells covering shared bytes [off, off + n) of block b: fn(cell, byte offset) for each, in
// order, until fn returns false. A whole word is one cell; a word accessed in part is split into
// byte cells (its state copied into each) and stays split.
template <class Fn>
bool for_cells(Block& b, std::size_t off, std::size_t n, Fn&& fn) {
  Run& r = run();
  const std::size_t end = off + n;
  for (std::size_t i = off; i < end;) {
    const std::size_t w = i / 4, lo = i % 4, hi = std::min<std::size_t>(4, end - 4 * w);
    Cell& word = b.words[w];
    if (!word.split && lo == 0 && hi == 4) {
      if (!fn(word, 4 * w)) return false;
    } else {
      if (!word.split) {
        std::array<Cell, 4> cells;
        for (Cell& c : cells) {
          c = word;
          if (word.more != 0) {  // each byte gets its own copy of the concurrent reads
            const std::uint32_t list = new_read_list();
            r.read_lists[list] = r.read_lists[word.more - 1];
            c.more = list + 1;
          }
        }
        if (word.more != 0) r.free_read_lists.push_back(word.more - 1);
        word = Cell{};
        word.split = true;
        b.bytes[w] = cells;
      }
      std::array<Cell, 4>& cells = b.bytes[w];
      for (std::size_t k = lo; k < hi; ++k)
        if (!fn(cells[k], 4 * w + k)) return false;
    }
    i = 4 * w + hi;
  }
  return true;
}

// Race, initialisation and cp.async checks of one access (or a cp.async completion) on shared
// bytes [off, off + n) of block b, by thread t at `site`. Returns false after a finding.
bool shadow_access(Thread& t, Block& b, std::size_t off, std::size_t n, bool write, bool atomic,
                   std::uint32_t site, bool completion = false) {
  Run& r = run();
  const std::vector<std::uint32_t>& V = t.vc;
  const auto where_of = [&](std::size_t at) {
    return "shared offset " + std::to_string(at) + " of " +
           (&b == &r.blocks[t.block] ? std::string("its block")
                                     : "cluster rank " + std::to_string(&b - r.blocks.data()));
  };
  const auto race = [&](const Epoch& other, const char* mine, const char* theirs, std::size_t at) {
    finding("shared_race", r.sites.name(site) + "|" + r.sites.name(other.site),
            who(t) + ": " + mine + " " + where_of(at) + " at " + r.sites.name(site) + "; " +
                thread_name(other.tid) + " " + theirs + " it at " + r.sites.name(other.site) +
                " with no barrier ordering the two");
    return false;
  };
  return for_cells(b, off, n, [&](Cell& s, std::size_t at) {
    if (s.pending != kNone && !completion) {
      finding("cp_async", r.sites.name(site),
              who(t) + ": accesses " + where_of(at) + " at " + r.sites.name(site) +
                  ", the destination of an asynchronous copy by " + thread_name(s.pending) +
                  " that has not completed (no cp.async.wait_group or mbarrier phase covers it)");
      return false;
    }
    if (!write) {
      if (s.w.tid == kNone) {
        finding("uninitialized_read", r.sites.name(site),
                who(t) + ": reads " + where_of(at) + " at " + r.sites.name(site) +
                    ", which nothing has written in this launch");
        return false;
      }
      if (s.w.tid != t.id && !before(s.w, V)) return race(s.w, "reads", "wrote", at);
      const Epoch me{t.id, V[t.id], site};
      if (s.more == 0 && (s.r.tid == kNone || s.r.tid == t.id || before(s.r, V))) {
        s.r = me;  // the previous read happens before this one: this one stands for both
        return true;
      }
      if (s.more == 0) {
        s.more = new_read_list() + 1;
        r.read_lists[s.more - 1].push_back(s.r);
      }
      auto& list = r.read_lists[s.more - 1];
      if (list.back().tid == t.id) {
        list.back() = me;
      } else {
        list.push_back(me);
        if (list.size() >= 64 && (list.size() & (list.size() - 1)) == 0) compact(list);
      }
      s.r = me;
      return true;
    }
    if (s.w.tid != kNone && s.w.tid != t.id && !before(s.w, V) && !(atomic && s.atomic))
      return race(s.w, "writes", "wrote", at);
    if (!(atomic && s.atomic)) {
      const auto unordered = [&](const Epoch& e) {
        return e.tid != kNone && e.tid != t.id && !before(e, V);
      };
      if (s.more != 0) {
        for (const Epoch& e : r.read_lists[s.more - 1])
          if (unordered(e)) return race(e, "writes", "read", at);
      } else if (unordered(s.r)) {
        return race(s.r, "writes", "read", at);
      }
    }
    s.w = Epoch{t.id, V[t.id], site};
    s.r = Epoch{};
    if (s.more != 0) {
      r.free_read_lists.push_back(s.more - 1);
      s.more = 0;
    }
    s.atomic = atomic;
    s.layout = 0xFF;
    s.generic = true;
    return true;
  });
}

}  // namespace

namespace detail {

bool shared_access(const void* addr, std::size_t bytes, Op op, const Loc& loc) {
  check_abort();
  Run& r = run();
  Thread& t = cur();
  const auto a = reinterpret_cast<std::uintptr_t>(addr);
  std::string why;
  std::size_t off = 0;
  const int blk = find_smem_block(a, bytes, &why, &off);
  const bool remote = blk >= 0 && static_cast<std::uint32_t>(blk) != t.block;
  const std::uint32_t site =
      site_of(loc, remote ? "dsmem" : "shared", op_name(op), static_cast<int>(bytes));
  if (blk < 0) {
    finding("out_of_bounds", r.sites.name(site),
            who(t) + ": shared " + op_name(op) + " of " + why + " at " + r.sites.name(site));
    return false;
  }
  if (!aligned(a, bytes)) {
    finding("misaligned", r.sites.name(site),
            who(t) + ": shared " + op_name(op) + " of " + std::to_string(bytes) +
                " bytes at misaligned shared offset " + std::to_string(off) + " at " +
                r.sites.name(site));
    return false;
  }
  Block& b = r.blocks[static_cast<std::size_t>(blk)];
  if (remote && b.live == 0) {
    finding("dsmem", r.sites.name(site),
            who(t) + ": accesses the shared memory of cluster rank " + std::to_string(blk) +
                " at " + r.sites.name(site) + " after every thread of that block exited");
    return false;
  }
  const bool write = op == Op::kStore || op == Op::kAtomic;
  if (!shadow_access(t, b, off, bytes, write, op == Op::kAtomic, site)) return false;
  if (remote) b.remote[t.id] = Epoch{t.id, t.vc[t.id], site};
  record(site, addr, bytes);
  return true;
}

void* dynamic_smem_base() {
  check_abort();
  Run& r = run();
  return r.blocks[cur().block].smem;
}

idx3 thread_idx() { return cur().tidx; }
idx3 block_idx() { return run().blocks[cur().block].bidx; }
idx3 block_dim() { return run().cfg->block; }
idx3 grid_dim() { return run().cfg->grid; }
unsigned cluster_block_rank() { return cur().block; }
unsigned cluster_num_blocks() { return static_cast<unsigned>(run().blocks.size()); }

void bar_sync(int id, int threads, const Loc& loc) {
  check_abort();
  Run& r = run();
  Thread& t = cur();
  const std::uint32_t site = site_of(loc, "sync", "bar.sync", 0);
  record(site, nullptr, 0);
  if (threads < 0) threads = static_cast<int>(r.threads_per_block);
  if (id < 0 || id > 15 || threads % 32 != 0 || threads <= 0 ||
      threads > static_cast<int>(r.threads_per_block)) {
    finding("barrier_mismatch", r.sites.name(site),
            who(t) + ": bar.sync " + std::to_string(id) + ", " + std::to_string(threads) +
                " at " + r.sites.name(site) +
                ": the id must be 0..15 and the count a positive multiple of 32 up to the block size");
    throw Aborted{};
  }
  Block& b = r.blocks[t.block];
  Bar& bar = b.bars[id];
  if (bar.expected < 0) {
    bar.expected = threads;
    bar.site = site;
  } else if (bar.expected != threads) {
    finding("barrier_mismatch", r.sites.name(site) + "|" + r.sites.name(bar.site),
            who(t) + ": bar.sync " + std::to_string(id) + " with " + std::to_string(threads) +
                " threads at " + r.sites.name(site) + " while other threads wait there for " +
                std::to_string(bar.expected) + " (" + r.sites.name(bar.site) + ")");
  }
  join_into(bar.join, t.vc);
  ++bar.arrived;
  if (bar.arrived >= bar.expected) {
    for (Thread* w : bar.waiters) {
      w->vc = bar.join;
      ++w->vc[w->id];
      make_ready(*w);
    }
    t.vc = bar.join;
    ++t.vc[t.id];
    bar = Bar{};
    yield_ready();
    return;
  }
  bar.waiters.push_back(&t);
  block_here("bar.sync " + std::to_string(id) + " (" + std::to_string(threads) + " threads)", site);
}

}  // namespace detail

namespace {

// Arrival of the running thread at a warp collective; returns once every lane of the mask has
// arrived, with t.result set.
void warp_collective(CollKind kind, int sub, unsigned mask, std::uint64_t bits, int arg, int width,
                     int words, std::uint32_t site, const char* what) {
  Run& r = run();
  Thread& t = cur();
  Block& b = r.blocks[t.block];
  Coll& c = b.warps[t.warp];
  const std::string sname = r.sites.name(site);
  if ((mask >> t.lane & 1u) == 0) {
    finding("warp_collective", sname,
            who(t) + ": " + what + " at " + sname + " with a mask that does not name the calling lane");
    throw Aborted{};
  }
  // Lanes of the mask that exited can never arrive.
  const std::uint32_t warp_first = b.first_thread + t.warp * 32;
  unsigned live_mask = mask;
  for (int l = 0; l < 32; ++l) {
    if ((mask >> l & 1u) == 0) continue;
    const std::uint32_t id = warp_first + static_cast<std::uint32_t>(l);
    if (id >= b.first_thread + r.threads_per_block || r.threads[id].state == State::kDone) {
      finding("warp_collective", sname + "|exited",
              who(t) + ": " + what + " at " + sname + " names lane " + std::to_string(l) +
                  ", which has exited or does not exist");
      live_mask &= ~(1u << l);
    }
  }
  if (c.kind == CollKind::kIdle) {
    c.kind = kind;
    c.sub = sub;
    c.mask = mask;
    c.site = site;
    c.width = width;
    c.words = words;
    c.arrived = 0;
  } else if (c.kind != kind || c.sub != sub || c.mask != mask) {
    finding("warp_collective", sname + "|" + r.sites.name(c.site),
            who(t) + ": " + what + " at " + sname + " while other lanes of its warp wait in a " +
                "different collective or mask at " + r.sites.name(c.site));
    throw Aborted{};
  }
  c.bits[t.lane] = bits;
  c.arg[t.lane] = arg;
  c.arrived |= 1u << t.lane;
  if ((c.arrived & live_mask) != live_mask) {
    c.waiters.push_back(&t);
    block_here(std::string(what), site);
    return;
  }
  // Every lane is here: compute the results.
  std::vector<std::uint32_t> join;
  for (int l = 0; l < 32; ++l)
    if (c.arrived >> l & 1u) join_into(join, r.threads[warp_first + l].vc);
  for (int l = 0; l < 32; ++l) {
    if ((c.arrived >> l & 1u) == 0) continue;
    Thread& lt = r.threads[warp_first + l];
    std::uint64_t res = c.bits[l];
    if (kind == CollKind::kShfl) {
      const int w = c.width;
      const int seg = l & ~(w - 1);
      int src = l;
      const int a = c.arg[l];
      switch (static_cast<detail::Shfl>(c.sub)) {
        case detail::Shfl::kIdx: src = seg | (a & (w - 1)); break;
        case detail::Shfl::kXor: src = l ^ a; if ((src & ~(w - 1)) != seg) src = l; break;
        case detail::Shfl::kDown: src = l + a; if (src >= seg + w) src = l; break;
        case detail::Shfl::kUp: src = l - a; if (src < seg) src = l; break;
      }
      if (src < 0 || src > 31 || (c.arrived >> src & 1u) == 0) {
        finding("warp_collective", sname + "|src",
                who(lt) + ": shfl at " + sname + " reads lane " + std::to_string(src) +
                    ", which is not in the mask (its value is undefined on the device)");
      } else {
        res = c.bits[src];
      }
    } else if (kind == CollKind::kVote) {
      unsigned ballot = 0;
      for (int k = 0; k < 32; ++k)
        if ((c.arrived >> k & 1u) && c.bits[k] != 0) ballot |= 1u << k;
      switch (static_cast<detail::Vote>(c.sub)) {
        case detail::Vote::kBallot: res = ballot; break;
        case detail::Vote::kAny: res = ballot != 0; break;
        case detail::Vote::kAll: res = ballot == c.arrived; break;
      }
    }
    lt.result = res;
    if (kind == CollKind::kSyncWarp) {
      lt.vc = join;
      ++lt.vc[lt.id];
    }
  }
  for (Thread* w : c.waiters) make_ready(*w);
  c = Coll{};
  yield_ready();
}

}  // namespace

namespace detail {

std::uint64_t shfl(unsigned mask, std::uint64_t bits, int arg, int width, Shfl kind, int words,
                   const Loc& loc) {
  check_abort();
  const std::uint32_t site = site_of(loc, "sync", "shfl", 0);
  for (int i = 0; i < words; ++i) record(site, nullptr, 0);
  if (width <= 0 || width > 32 || (width & (width - 1)) != 0) {
    finding("warp_collective", run().sites.name(site),
            who(cur()) + ": shfl width " + std::to_string(width) + " at " + run().sites.name(site) +
                " is not a power of two in 1..32");
    throw Aborted{};
  }
  warp_collective(CollKind::kShfl, static_cast<int>(kind), mask, bits, arg, width, words, site,
                  "shfl");
  return cur().result;
}

unsigned vote(unsigned mask, bool p, Vote kind, const Loc& loc) {
  check_abort();
  const std::uint32_t site = site_of(loc, "sync", "vote", 0);
  record(site, nullptr, 0);
  warp_collective(CollKind::kVote, static_cast<int>(kind), mask, p ? 1 : 0, 0, 32, 1, site, "vote");
  return static_cast<unsigned>(cur().result);
}

void sync_warp(unsigned mask, const Loc& loc) {
  check_abort();
  const std::uint32_t site = site_of(loc, "sync", "bar.warp.sync", 0);
  record(site, nullptr, 0);
  warp_collective(CollKind::kSyncWarp, 0, mask, 0, 0, 32, 1, site, "__syncwarp");
}

}  // namespace detail

namespace {

bool cluster_phase_complete(std::uint32_t phase) {
  Run& r = run();
  std::uint32_t n = phase < r.cl_count.size() ? r.cl_count[phase] : 0;
  for (const std::uint32_t a : r.cl_done_arrives)
    if (a < phase) ++n;  // exited threads count as arrived
  return n >= r.threads.size();
}

void wake_cluster_phases() {
  Run& r = run();
  for (std::uint32_t p = 1; p < r.cl_waiters.size(); ++p) {
    if (r.cl_waiters[p].empty() || !cluster_phase_complete(p)) continue;
    for (Thread* w : r.cl_waiters[p]) {
      join_into(w->vc, r.cl_vc[p]);
      make_ready(*w);
    }
    r.cl_waiters[p].clear();
  }
}

void grow_phases(std::uint32_t phase) {
  Run& r = run();
  if (r.cl_count.size() <= phase) {
    r.cl_count.resize(phase + 1, 0);
    r.cl_vc.resize(phase + 1);
    r.cl_waiters.resize(phase + 1);
  }
}

void on_thread_exit(Thread& t) {
  Run& r = *g_run;
  if (!r.aborting && (!t.open.empty() || !t.groups.empty()))
    finding("cp_async", "exit",
            who(t) + ": exits with cp.async copies that no cp.async.wait_group completed");
  Block& b = r.blocks[t.block];
  --b.live;
  r.cl_done_arrives.push_back(t.arrives);
  if (b.live == 0 && !r.aborting)
    for (const auto& [off, m] : b.mbars)
      if (!m.copies.empty()) {
        finding("mbarrier", "exit|" + std::to_string(off),
                "block " + str(b.bidx) + " exits with a cp.async.bulk on the mbarrier at shared " +
                    "offset " + std::to_string(off) + " whose phase never completed");
        break;
      }
  if (b.live == 0 && !r.aborting && !b.remote.empty()) {
    // The block's exit: every remote access into its shared memory must be ordered before it.
    std::vector<std::uint32_t> exit_vc;
    for (std::uint32_t i = 0; i < r.threads_per_block; ++i)
      join_into(exit_vc, r.threads[b.first_thread + i].vc);
    for (const auto& [tid, e] : b.remote)
      if (!before(e, exit_vc)) {
        finding("dsmem", r.sites.name(e.site) + "|exit",
                "block " + str(b.bidx) + " exits while the access of " + thread_name(tid) + " at " +
                    r.sites.name(e.site) + " to its shared memory is not ordered before the exit " +
                    "(no cluster barrier after the last DSMEM access)");
        break;
      }
  }
  if (!r.aborting) wake_cluster_phases();
}

}  // namespace

namespace detail {

void cluster_arrive(const Loc& loc) {
  check_abort();
  Run& r = run();
  Thread& t = cur();
  const std::uint32_t site = site_of(loc, "sync", "barrier.cluster.arrive", 0);
  record(site, nullptr, 0);
  if (t.arrives != t.waits) {
    finding("barrier_mismatch", r.sites.name(site),
            who(t) + ": barrier.cluster.arrive at " + r.sites.name(site) +
                " twice without a barrier.cluster.wait between");
    throw Aborted{};
  }
  const std::uint32_t phase = ++t.arrives;
  grow_phases(phase);
  ++r.cl_count[phase];
  join_into(r.cl_vc[phase], t.vc);
  ++t.vc[t.id];
  wake_cluster_phases();
}

void cluster_wait(const Loc& loc) {
  check_abort();
  Run& r = run();
  Thread& t = cur();
  const std::uint32_t site = site_of(loc, "sync", "barrier.cluster.wait", 0);
  record(site, nullptr, 0);
  if (t.waits + 1 != t.arrives) {
    finding("barrier_mismatch", r.sites.name(site),
            who(t) + ": barrier.cluster.wait at " + r.sites.name(site) +
                " without a matching barrier.cluster.arrive");
    throw Aborted{};
  }
  const std::uint32_t phase = ++t.waits;
  if (cluster_phase_complete(phase)) {
    join_into(t.vc, r.cl_vc[phase]);
    yield_ready();
    return;
  }
  r.cl_waiters[phase].push_back(&t);
  block_here("barrier.cluster.wait (phase " + std::to_string(phase) + ")", site);
}

void* map_shared_rank(const void* p, unsigned rank, const Loc& loc) {
  check_abort();
  Run& r = run();
  Thread& t = cur();
  const std::uint32_t site = site_of(loc, "sync", "mapa", 0);
  const auto a = reinterpret_cast<std::uintptr_t>(p);
  const auto base = reinterpret_cast<std::uintptr_t>(r.arena_base);
  if (rank >= r.blocks.size() || a < base || a >= base + r.arena_bytes) {
    finding("dsmem", r.sites.name(site),
            who(t) + ": map_shared_rank(rank " + std::to_string(rank) + ") at " +
                r.sites.name(site) + ": " +
                (rank >= r.blocks.size()
                     ? "the cluster has " + std::to_string(r.blocks.size()) + " blocks"
                     : std::string("the pointer is not in shared memory")));
    return const_cast<void*>(p);
  }
  const std::size_t in = (a - base) % r.block_stride;
  return r.arena_base + rank * r.block_stride + in;
}

void cp_async(void* smem_dst, const void* gmem_src, std::size_t bytes, const Loc& loc) {
  check_abort();
  Run& r = run();
  Thread& t = cur();
  if (!global_access(gmem_src, bytes, Op::kLoadCg, loc)) return;
  // global_access interned the site as a global ld.cg: name it as the cp.async it is.
  const std::uint32_t site = r.sites.intern(loc);
  r.sites.at(site).op = "cp.async";
  const auto a = reinterpret_cast<std::uintptr_t>(smem_dst);
  std::string why;
  std::size_t off = 0;
  const int blk = find_smem_block(a, bytes, &why, &off);
  if (blk < 0 || static_cast<std::uint32_t>(blk) != t.block || a % bytes != 0) {
    finding("out_of_bounds", r.sites.name(site) + "|cp",
            who(t) + ": cp.async destination: " +
                (blk < 0 ? why : std::string("not this block's shared memory or not aligned")) +
                " at " + r.sites.name(site));
    return;
  }
  Block& b = r.blocks[t.block];
  for_cells(b, off, bytes, [&](Cell& c, std::size_t) {
    c.pending = t.id;
    c.generic = false;  // written by the async proxy
    return true;
  });
  t.open.push_back(Copy{static_cast<unsigned char*>(smem_dst),
                        static_cast<const unsigned char*>(gmem_src), bytes, site});
}

void cp_async_commit(const Loc& loc) {
  check_abort();
  Thread& t = cur();
  (void)loc;
  t.groups.push_back(std::move(t.open));
  t.open.clear();
}

void cp_async_wait(int pending, const Loc& loc) {
  check_abort();
  Run& r = run();
  Thread& t = cur();
  (void)loc;
  const auto base = reinterpret_cast<std::uintptr_t>(r.arena_base);
  while (static_cast<int>(t.groups.size()) > pending) {
    for (const Copy& c : t.groups.front()) {
      const std::size_t off = (reinterpret_cast<std::uintptr_t>(c.dst) - base) % r.block_stride - kSmemGuard;
      Block& b = r.blocks[t.block];
      for_cells(b, off, c.bytes, [](Cell& cell, std::size_t) {
        cell.pending = kNone;
        return true;
      });
      if (shadow_access(t, b, off, c.bytes, true, false, c.site, true))
        std::memcpy(c.dst, c.src, c.bytes);
    }
    t.groups.pop_front();
  }
}

}  // namespace detail

namespace {

// The mbarrier at `bar` in the running thread's cluster, or null after a finding.
MBar* mbar_at(void* bar, const std::uint32_t site, const char* what, bool must_exist,
              Block** block = nullptr, std::size_t* offset = nullptr) {
  Run& r = run();
  Thread& t = cur();
  std::string why;
  std::size_t off = 0;
  const int blk = find_smem_block(reinterpret_cast<std::uintptr_t>(bar), 8, &why, &off);
  if (blk < 0 || off % 8 != 0) {
    finding("mbarrier", r.sites.name(site),
            who(t) + ": " + what + " at " + r.sites.name(site) + ": " +
                (blk < 0 ? why : "the mbarrier is not 8-byte aligned"));
    return nullptr;
  }
  Block& b = r.blocks[static_cast<std::size_t>(blk)];
  if (block != nullptr) *block = &b;
  if (offset != nullptr) *offset = off;
  const auto it = b.mbars.find(off);
  if (it == b.mbars.end()) {
    if (must_exist)
      finding("mbarrier", r.sites.name(site),
              who(t) + ": " + what + " at " + r.sites.name(site) + " on shared offset " +
                  std::to_string(off) + ", which no mbarrier.init initialised");
    return must_exist ? nullptr : &b.mbars[off];
  }
  if (must_exist && !before(it->second.init, t.vc)) {
    finding("shared_race", r.sites.name(site) + "|" + r.sites.name(it->second.init.site),
            who(t) + ": " + what + " at " + r.sites.name(site) + " is not ordered after the " +
                "mbarrier.init by " + thread_name(it->second.init.tid) + " at " +
                r.sites.name(it->second.init.site) + " (a barrier or fence between them is missing)");
    return nullptr;
  }
  return &it->second;
}

// Completes the current phase of m if every arrival and transaction byte is in: the copies land,
// waiters of that parity wake with the phase's clocks.
void mbar_try_complete(Block& b, MBar& m) {
  if (m.pending != 0 || m.tx != 0) return;
  for (const BulkCopy& c : m.copies) {
    const std::size_t off = static_cast<std::size_t>(c.dst - b.smem);
    for_cells(b, off, c.bytes, [](Cell& cell, std::size_t) {
      cell.pending = kNone;
      return true;
    });
    for (const CopySegment& g : c.segs) {
      if (g.src != nullptr)
        std::memcpy(c.dst + g.dst_off, g.src, g.bytes);
      else
        std::memset(c.dst + g.dst_off, 0, g.bytes);
    }
    join_into(m.join, c.vc);
  }
  m.copies.clear();
  const unsigned parity = m.phase & 1u;
  m.done_vc[parity] = m.join;
  ++m.phase;
  m.pending = m.expected;
  m.join.clear();
  std::vector<std::pair<Thread*, unsigned>> still;
  for (const auto& [w, p] : m.waiters) {
    if (p == parity) {
      join_into(w->vc, m.done_vc[parity]);
      make_ready(*w);
    } else {
      still.emplace_back(w, p);
    }
  }
  m.waiters.swap(still);
}

}  // namespace

namespace detail {

void mbar_init(void* bar, unsigned count, const Loc& loc) {
  check_abort();
  Run& r = run();
  Thread& t = cur();
  const std::uint32_t site = site_of(loc, "sync", "mbarrier.init", 0);
  Block* b = nullptr;
  std::size_t off = 0;
  MBar* m = mbar_at(bar, site, "mbarrier.init", false, &b, &off);
  if (m == nullptr) return;
  if (count == 0 || count >= (1u << 20)) {
    finding("mbarrier", r.sites.name(site),
            who(t) + ": mbarrier.init at " + r.sites.name(site) + " with count " +
                std::to_string(count) + " (must be 1 .. 2^20 - 1)");
    if (m->expected == 0) b->mbars.erase(off);  // no barrier was made: later uses are reported
    return;
  }
  if (!m->waiters.empty() || !m->copies.empty()) {
    finding("mbarrier", r.sites.name(site) + "|reinit",
            who(t) + ": mbarrier.init at " + r.sites.name(site) +
                " re-initialises a barrier with waiters or copies in flight");
    return;
  }
  if (!shadow_access(t, *b, off, 8, true, false, site)) return;
  *m = MBar{};
  m->expected = m->pending = count;
  m->init = Epoch{t.id, t.vc[t.id], site};
}

void mbar_arrive(void* bar, unsigned expect_tx, bool with_tx, const Loc& loc) {
  check_abort();
  Thread& t = cur();
  const std::uint32_t site =
      site_of(loc, "sync", with_tx ? "mbarrier.arrive.expect_tx" : "mbarrier.arrive", 0);
  record(site, nullptr, 0);
  Block* b = nullptr;
  MBar* m = mbar_at(bar, site, "mbarrier.arrive", true, &b);
  if (m == nullptr) return;
  if (with_tx) m->tx += expect_tx;
  join_into(m->join, t.vc);
  ++t.vc[t.id];
  --m->pending;
  mbar_try_complete(*b, *m);
}

bool mbar_wait(void* bar, unsigned parity, bool block, const Loc& loc) {
  check_abort();
  Run& r = run();
  Thread& t = cur();
  const std::uint32_t site = site_of(loc, "sync", "mbarrier.try_wait", 0);
  const std::uint64_t polls_before = r.idle_polls;
  record(site, nullptr, 0);
  if (parity > 1) {
    finding("mbarrier", r.sites.name(site),
            who(t) + ": mbarrier wait at " + r.sites.name(site) + " with parity " +
                std::to_string(parity) + " (0 or 1)");
    return true;
  }
  MBar* m = mbar_at(bar, site, "mbarrier.try_wait", true);
  if (m == nullptr) return true;
  if ((m->phase & 1u) != parity) {  // the phase of this parity has completed
    join_into(t.vc, m->done_vc[parity]);
    yield_ready();
    return true;
  }
  if (!block) {
    // A failed poll is no progress. When every ready thread only polls (no other operation in
    // many polls per live thread), no phase can complete: the spinning version of a deadlock.
    r.idle_polls = polls_before + 1;
    std::uint64_t live = 0;
    for (const Thread& x : r.threads) live += x.state != State::kDone ? 1 : 0;
    if (r.idle_polls > 64 * live + 64) {
      r.seen.clear();
      finding("deadlock", "poll",
              "deadlock: " + who(t) + " and every other running thread poll mbarriers (last at " +
                  r.sites.name(site) + ") whose phases can no longer complete");
      r.aborting = true;
      for (Thread& x : r.threads)
        if (x.state == State::kBlocked) make_ready(x);
      throw Aborted{};
    }
    yield_ready();  // a polling loop must let the producers run
    return false;
  }
  m->waiters.emplace_back(&t, parity);
  block_here("mbarrier.try_wait.parity " + std::to_string(parity), site);
  return true;
}

void bulk_copy(void* smem_dst, const void* gmem_src, std::size_t bytes, void* bar, const Loc& loc) {
  check_abort();
  Run& r = run();
  Thread& t = cur();
  if (bytes == 0 || bytes % 16 != 0 || reinterpret_cast<std::uintptr_t>(smem_dst) % 16 != 0 ||
      reinterpret_cast<std::uintptr_t>(gmem_src) % 16 != 0) {
    const std::uint32_t site = site_of(loc, "global", "cp.async.bulk", static_cast<int>(bytes));
    finding("misaligned", r.sites.name(site),
            who(t) + ": cp.async.bulk of " + std::to_string(bytes) + " bytes at " +
                r.sites.name(site) + ": size and both addresses must be multiples of 16");
    return;
  }
  const std::uint32_t site = site_of(loc, "global", "cp.async.bulk", static_cast<int>(bytes));
  {
    std::string why;
    std::uintptr_t begin = 0;
    if (find_buffer(reinterpret_cast<std::uintptr_t>(gmem_src), bytes, &why, &begin) == nullptr) {
      finding("out_of_bounds", r.sites.name(site),
              who(t) + ": cp.async.bulk source of " + why + " at " + r.sites.name(site));
      return;
    }
  }
  // One request of the whole span (the copy engine reads it once, in 32-byte sectors).
  if (r.acc.size() <= site) r.acc.resize(site + 1);
  {
    SiteAcc& acc = r.acc[site];
    const auto lo = reinterpret_cast<std::uintptr_t>(gmem_src);
    acc.sectors += ((lo + bytes - 1) >> 5) - (lo >> 5) + 1;
    ++acc.requests;
    ++acc.lanes;
    ++r.report.mix.tma;
  }
  Block* mb = nullptr;
  MBar* m = mbar_at(bar, site, "cp.async.bulk", true, &mb);
  if (m == nullptr) return;
  std::string why;
  std::size_t off = 0;
  const int blk = find_smem_block(reinterpret_cast<std::uintptr_t>(smem_dst), bytes, &why, &off);
  if (blk < 0 || static_cast<std::uint32_t>(blk) != t.block || mb != &r.blocks[t.block]) {
    finding("out_of_bounds", r.sites.name(site) + "|bulk",
            who(t) + ": cp.async.bulk destination or mbarrier at " + r.sites.name(site) + ": " +
                (blk < 0 ? why : std::string("not this block's shared memory")));
    return;
  }
  Block& b = r.blocks[t.block];
  // The copy may land any time after the issue: every earlier access to its bytes must be
  // ordered before the issue, every later one after the phase completes.
  if (!shadow_access(t, b, off, bytes, true, false, site)) return;
  for_cells(b, off, bytes, [&](Cell& c, std::size_t) {
    c.pending = t.id;
    return true;
  });
  m->tx -= static_cast<std::int64_t>(bytes);
  m->copies.push_back(BulkCopy{static_cast<unsigned char*>(smem_dst), bytes,
                               {CopySegment{0, static_cast<const unsigned char*>(gmem_src),
                                            static_cast<std::uint32_t>(bytes)}},
                               site, t.id, t.vc});
  mbar_try_complete(b, *m);
}

void tma_load_2d(void* smem_dst, const TensorMap2d& tm, int c0, int c1, void* bar, const Loc& loc) {
  check_abort();
  Run& r = run();
  Thread& t = cur();
  const std::uint32_t site = site_of(loc, "global", "tma.load.2d", 0);
  const auto where = [&] { return who(t) + ": cp.async.bulk.tensor.2d at " + r.sites.name(site); };
  if (tm.global == nullptr || tm.elem_bytes == 0) {
    finding("tma", r.sites.name(site), where() + " with a tensor map that was never encoded");
    return;
  }
  const std::uint32_t row_bytes = tm.box[0] * tm.elem_bytes;
  const std::size_t bytes = static_cast<std::size_t>(row_bytes) * tm.box[1];
  const auto a = reinterpret_cast<std::uintptr_t>(smem_dst);
  if (a % swizzle_alignment(tm.swizzle) != 0) {
    finding("misaligned", r.sites.name(site),
            where() + ": the destination is not " + std::to_string(swizzle_alignment(tm.swizzle)) +
                "-byte aligned, as " +
                (tm.swizzle == Swizzle::kNone ? std::string("every TMA tile")
                                              : "a " + std::to_string(swizzle_span(tm.swizzle)) +
                                                    "-byte swizzled tile") +
                " must be");
    return;
  }
  Block* mb = nullptr;
  MBar* m = mbar_at(bar, site, "cp.async.bulk.tensor", true, &mb);
  if (m == nullptr) return;
  std::string why;
  std::size_t off = 0;
  const int blk = find_smem_block(a, bytes, &why, &off);
  if (blk < 0 || static_cast<std::uint32_t>(blk) != t.block || mb != &r.blocks[t.block]) {
    finding("out_of_bounds", r.sites.name(site) + "|tma",
            where() + ": destination or mbarrier: " +
                (blk < 0 ? why : std::string("not this block's shared memory")));
    return;
  }
  // The box, element by element, in shared-memory order after the swizzle; the in-bounds part of
  // each row must lie in a live buffer (it is one global request per row for the tables).
  BulkCopy copy{static_cast<unsigned char*>(smem_dst), bytes, {}, site, t.id, t.vc};
  if (r.acc.size() <= site) r.acc.resize(site + 1);
  SiteAcc& acc = r.acc[site];
  for (std::uint32_t y = 0; y < tm.box[1]; ++y) {
    const std::int64_t gy = static_cast<std::int64_t>(c1) + y;
    const bool row_in = gy >= 0 && static_cast<std::uint64_t>(gy) < tm.dims[1];
    std::int64_t first = -1, last = -1;
    for (std::uint32_t x = 0; x < tm.box[0]; ++x) {
      const std::int64_t gx = static_cast<std::int64_t>(c0) + x;
      const bool in = row_in && gx >= 0 && static_cast<std::uint64_t>(gx) < tm.dims[0];
      const std::uint32_t lin = y * row_bytes + x * tm.elem_bytes;
      const std::uint32_t phys = swizzle_offset(tm.swizzle, lin);
      const unsigned char* src =
          in ? tm.global + static_cast<std::uint64_t>(gy) * tm.row_stride +
                   static_cast<std::uint64_t>(gx) * tm.elem_bytes
             : nullptr;
      copy.segs.push_back(CopySegment{phys, src, tm.elem_bytes});
      if (in) {
        if (first < 0) first = gx;
        last = gx;
      }
    }
    if (first >= 0) {
      const unsigned char* row0 = tm.global + static_cast<std::uint64_t>(gy) * tm.row_stride +
                                  static_cast<std::uint64_t>(first) * tm.elem_bytes;
      const std::size_t span = static_cast<std::size_t>(last - first + 1) * tm.elem_bytes;
      std::uintptr_t begin = 0;
      if (find_buffer(reinterpret_cast<std::uintptr_t>(row0), span, &why, &begin) == nullptr) {
        finding("out_of_bounds", r.sites.name(site) + "|tma-global",
                where() + ": row " + std::to_string(gy) + " of the tensor: " + why);
        return;
      }
      const auto lo = reinterpret_cast<std::uintptr_t>(row0);
      acc.sectors += ((lo + span - 1) >> 5) - (lo >> 5) + 1;
    }
  }
  ++acc.requests;
  ++r.report.mix.tma;
  if (!shadow_access(t, r.blocks[t.block], off, bytes, true, false, site)) return;
  for_cells(r.blocks[t.block], off, bytes, [&](Cell& c, std::size_t) {
    c.pending = t.id;
    c.layout = static_cast<std::uint8_t>(tm.swizzle);
    c.generic = false;  // written by the async proxy
    return true;
  });
  m->tx -= static_cast<std::int64_t>(bytes);
  m->copies.push_back(std::move(copy));
  mbar_try_complete(r.blocks[t.block], *m);
}

std::uint32_t smem_address(const void* p, const Loc& loc) {
  check_abort();
  Run& r = run();
  Thread& t = cur();
  std::string why;
  std::size_t off = 0;
  const int blk = find_smem_block(reinterpret_cast<std::uintptr_t>(p), 0, &why, &off);
  if (blk < 0 || static_cast<std::uint32_t>(blk) != t.block) {
    const std::uint32_t site = site_of(loc, "sync", "desc", 0);
    finding("wgmma", r.sites.name(site),
            who(t) + ": a matrix descriptor at " + r.sites.name(site) + " of " +
                (blk < 0 ? why : std::string("another block's shared memory")));
    return 0;
  }
  return static_cast<std::uint32_t>(off);
}

void count_alu(Alu kind) noexcept {
  if (g_run != nullptr && g_cur != nullptr) ++g_run->alu[static_cast<int>(kind)];
}

void wgmma_sync(const char* what, const Loc& loc) {
  check_abort();
  record(site_of(loc, "sync", what, 0), nullptr, 0);
}

void fence_proxy_async(const Loc& loc) {
  check_abort();
  Thread& t = cur();
  record(site_of(loc, "sync", "fence.proxy.async", 0), nullptr, 0);
  // A clock tick of its own: the writes before the fence carry an earlier clock than it.
  ++t.vc[t.id];
  t.proxy_fences.push_back(t.vc[t.id]);
}

}  // namespace detail

namespace {

struct Desc {
  std::uint32_t start, lbo, sbo;
  Swizzle swizzle;
};
Desc decode_desc(std::uint64_t d) {
  const std::uint64_t code = d >> 62;
  const Swizzle s = code == 1 ? Swizzle::k128B : code == 2 ? Swizzle::k64B : code == 3 ? Swizzle::k32B
                                                                                      : Swizzle::kNone;
  return {static_cast<std::uint32_t>(d & 0x3FFF) << 4, static_cast<std::uint32_t>((d >> 16) & 0x3FFF) << 4,
          static_cast<std::uint32_t>((d >> 32) & 0x3FFF) << 4, s};
}
// Shared byte offset of the 16-byte chunk c of K-major row r (bf16: k = 8c .. 8c + 7; e4m3:
// k = 16c .. 16c + 15).
std::uint32_t chunk_offset(const Desc& d, int r, int c) {
  if (d.swizzle == Swizzle::kNone)
    return d.start + static_cast<std::uint32_t>(r / 8) * d.sbo + static_cast<std::uint32_t>(c) * d.lbo +
           static_cast<std::uint32_t>(r % 8) * 16;
  const std::uint32_t lin = d.start + static_cast<std::uint32_t>(r / 8) * d.sbo +
                            static_cast<std::uint32_t>(r % 8) * swizzle_span(d.swizzle) +
                            static_cast<std::uint32_t>(c) * 16;
  return swizzle_offset(d.swizzle, lin);
}

float bf16_at(const unsigned char* p) {
  std::uint16_t h;
  std::memcpy(&h, p, 2);
  const std::uint32_t u = static_cast<std::uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// One output of an instruction (K = 16 bf16 or 32 e4m3 products) under the run's model.
float mma_accumulate(float acc, const float* a, const float* b, const RunOptions& opt, int K) {
  if (opt.mma_model == MmaModel::kIeeeFp32) {
    for (int k = 0; k < K; ++k) acc = acc + a[k] * b[k];  // bf16 and e4m3 products are exact
    return acc;
  }
  double terms[33];
  terms[0] = acc;
  int emax = -100000;
  for (int k = 0; k < K; ++k) terms[k + 1] = static_cast<double>(a[k]) * static_cast<double>(b[k]);
  for (int k = K + 1; k < 33; ++k) terms[k] = 0.0;
  for (const double x : terms)
    if (x != 0.0 && std::isfinite(x)) emax = std::max(emax, std::ilogb(x));
  if (emax == -100000) return acc + 0.0f;
  const double quantum = std::ldexp(1.0, emax - opt.mma_bits + 1);
  double sum = 0;
  for (const double x : terms) sum += std::trunc(x / quantum) * quantum;
  float out = static_cast<float>(sum);
  if (std::abs(static_cast<double>(out)) > std::abs(sum)) out = std::nextafter(out, 0.0f);  // toward 0
  return out;
}

// Whether the writer of `w` executed a fence.proxy.async after the write that the clock `seen`
// (the wgmma's joined clock) is ordered after.
bool proxy_fenced(const Epoch& w, const std::vector<std::uint32_t>& seen) {
  const std::vector<std::uint32_t>& f = run().threads[w.tid].proxy_fences;
  const auto it = std::upper_bound(f.begin(), f.end(), w.clk);
  return it != f.end() && w.tid < seen.size() && seen[w.tid] >= *it;
}

void run_wgmma(Block& b, Block::Wgmma& w, Thread& last) {
  Run& r = *g_run;
  const bool fp8 = w.type == detail::MmaType::kE4m3;
  const int K = fp8 ? 32 : 16, per_chunk = fp8 ? 16 : 8;
  const Desc da = decode_desc(w.da), db = decode_desc(w.db);
  const std::string sname = r.sites.name(w.site);
  // Participants' clocks joined: the operands must be ordered before the instruction.
  std::vector<std::uint32_t> join;
  const std::uint32_t first = b.first_thread + (last.linear / 128) * 128;
  for (std::uint32_t i = 0; i < 128; ++i) join_into(join, r.threads[first + i].vc);
  std::swap(last.vc, join);
  const auto load_rows = [&](const Desc& d, int rows, const char* name, std::vector<float>& out) {
    out.assign(static_cast<std::size_t>(rows) * K, 0.0f);
    for (int row = 0; row < rows; ++row)
      for (int c = 0; c < 2; ++c) {
        const std::uint32_t off = chunk_offset(d, row, c);
        if (static_cast<std::size_t>(off) + 16 > r.cfg->smem_bytes) {
          finding("out_of_bounds", sname + "|" + name,
                  who(last) + ": wgmma at " + sname + ": operand " + name + " row " +
                      std::to_string(row) + " at shared offset " + std::to_string(off) +
                      " is past the " + std::to_string(r.cfg->smem_bytes) + " bytes");
          return false;
        }
        if (!shadow_access(last, b, off, 16, false, false, w.site)) return false;
        bool ok = true;
        for_cells(b, off, 16, [&](Cell& cell, std::size_t at) {
          if (cell.generic && cell.w.tid != kNone && !proxy_fenced(cell.w, join)) {
            finding("async_proxy", sname + "|" + r.sites.name(cell.w.site),
                    who(last) + ": wgmma at " + sname + " reads operand " + name +
                        " at shared offset " + std::to_string(at) + ", which " +
                        thread_name(cell.w.tid) + " wrote at " + r.sites.name(cell.w.site) +
                        " through the generic proxy with no fence.proxy.async between the "
                        "write and the wgmma (the tensor cores may read stale bytes)");
            ok = false;
            return ok;
          }
          if (cell.layout != 0xFF && cell.layout != static_cast<std::uint8_t>(d.swizzle)) {
            finding("swizzle_mismatch", sname + "|" + name,
                    who(last) + ": wgmma at " + sname + " reads operand " + name +
                        " with a " + std::to_string(swizzle_span(d.swizzle)) +
                        "-byte swizzle descriptor (0: none) at shared offset " + std::to_string(at) +
                        ", which a TMA copy wrote with the " +
                        std::to_string(swizzle_span(static_cast<Swizzle>(cell.layout))) +
                        "-byte swizzle");
            ok = false;
          }
          return ok;
        });
        if (!ok) return false;
        for (int e = 0; e < per_chunk; ++e)
          out[static_cast<std::size_t>(row) * K + c * per_chunk + e] =
              fp8 ? fmt::e4m3_to_float(b.smem[off + e]) : bf16_at(b.smem + off + 2 * e);
      }
    return true;
  };
  std::vector<float> A, B;
  const bool ok = load_rows(da, 64, "A", A) && load_rows(db, w.n, "B", B);
  std::swap(last.vc, join);
  if (!ok) return;
  ++r.report.mix.mma;
  (fp8 ? r.report.mma_flops_fp8 : r.report.mma_flops_bf16) += 2.0 * 64 * w.n * K;
  for (std::uint32_t tw = 0; tw < 128; ++tw) {
    float* d = w.d[tw];
    const int warp = static_cast<int>(tw / 32), lane = static_cast<int>(tw % 32);
    const int rows[2] = {16 * warp + lane / 4, 16 * warp + lane / 4 + 8};
    for (int i = 0; i < w.n / 8; ++i)
      for (int q = 0; q < 4; ++q) {
        const int m = rows[q / 2], n = 8 * i + 2 * (lane % 4) + q % 2;
        const float acc = w.accumulate ? d[4 * i + q] : 0.0f;
        d[4 * i + q] = mma_accumulate(acc, &A[static_cast<std::size_t>(m) * K],
                                      &B[static_cast<std::size_t>(n) * K], *r.opt, K);
      }
  }
}

}  // namespace

namespace detail {

void wgmma(float* d, int n, MmaType type, std::uint64_t desc_a, std::uint64_t desc_b,
           bool accumulate, const Loc& loc) {
  check_abort();
  Run& r = run();
  Thread& t = cur();
  const std::uint32_t site = site_of(loc, "sync", "wgmma.mma_async", 0);
  record(site, nullptr, 0);
  if (r.threads_per_block % 128 != 0) {
    finding("wgmma", r.sites.name(site),
            who(t) + ": wgmma at " + r.sites.name(site) + " in a block of " +
                std::to_string(r.threads_per_block) + " threads (warpgroups of 128 need a multiple)");
    throw Aborted{};
  }
  Block& b = r.blocks[t.block];
  if (b.wgmma.empty()) b.wgmma.resize(r.threads_per_block / 128);
  Block::Wgmma& w = b.wgmma[t.linear / 128];
  if (w.arrived == 0) {
    w.type = type;
    w.n = n;
    w.da = desc_a;
    w.db = desc_b;
    w.accumulate = accumulate;
    w.site = site;
  } else if (w.n != n || w.type != type || w.da != desc_a || w.db != desc_b ||
             w.accumulate != accumulate) {
    finding("wgmma", r.sites.name(site),
            who(t) + ": wgmma at " + r.sites.name(site) + " with other operands, shape or scale-d " +
                "than the rest of its warpgroup (" + r.sites.name(w.site) + ")");
    throw Aborted{};
  }
  w.d[t.linear % 128] = d;
  if (++w.arrived < 128) {
    w.waiters.push_back(&t);
    block_here("wgmma.mma_async (warpgroup " + std::to_string(t.linear / 128) + ")", site);
    return;
  }
  run_wgmma(b, w, t);
  for (Thread* x : w.waiters) make_ready(*x);
  w = Block::Wgmma{};
  yield_ready();
}

const void* device_array(const char* name, std::size_t bytes) {
  Registry& reg = registry();
  const std::lock_guard<std::mutex> lock(reg.mu);
  auto& slot = reg.device_arrays[name];
  if (!slot) slot = std::make_unique<Buffer<unsigned char>>(name, bytes, 0);
  return slot->cptr().address();
}

}  // namespace detail

// ---------------------------------------------------------------- tensor maps

TensorMap2d encode_tensor_map_2d(const void* global, std::uint32_t elem_bytes, std::uint64_t dim0,
                                 std::uint64_t dim1, std::uint64_t row_stride, std::uint32_t box0,
                                 std::uint32_t box1, Swizzle swizzle) {
  const auto bad = [](const std::string& why) { throw Error("encode_tensor_map_2d: " + why); };
  if (elem_bytes != 1 && elem_bytes != 2 && elem_bytes != 4 && elem_bytes != 8)
    bad("element size must be 1, 2, 4 or 8 bytes, got " + std::to_string(elem_bytes));
  if (global == nullptr || reinterpret_cast<std::uintptr_t>(global) % 16 != 0)
    bad("the global address must be non-null and 16-byte aligned");
  if (dim0 == 0 || dim1 == 0 || dim0 > (std::uint64_t{1} << 32) || dim1 > (std::uint64_t{1} << 32))
    bad("dims must be in [1, 2^32], got [" + std::to_string(dim0) + ", " + std::to_string(dim1) + "]");
  if (row_stride % 16 != 0 || row_stride >= (std::uint64_t{1} << 40) || row_stride < dim0 * elem_bytes)
    bad("the row stride must be a multiple of 16 below 2^40 covering a row (" +
        std::to_string(dim0 * elem_bytes) + " bytes), got " + std::to_string(row_stride));
  if (box0 == 0 || box1 == 0 || box0 > 256 || box1 > 256)
    bad("box dims must be in [1, 256], got [" + std::to_string(box0) + ", " + std::to_string(box1) + "]");
  if (box0 * elem_bytes % 16 != 0)
    bad("the inner box (" + std::to_string(box0 * elem_bytes) + " bytes) must be a multiple of 16 bytes");
  if (swizzle != Swizzle::kNone && box0 * elem_bytes > swizzle_span(swizzle))
    bad("the inner box (" + std::to_string(box0 * elem_bytes) + " bytes) is wider than the " +
        std::to_string(swizzle_span(swizzle)) + "-byte swizzle span");
  std::string why;
  std::uintptr_t begin = 0;
  const std::size_t extent = static_cast<std::size_t>((dim1 - 1) * row_stride + dim0 * elem_bytes);
  if (find_buffer(reinterpret_cast<std::uintptr_t>(global), extent, &why, &begin) == nullptr)
    bad("the tensor (" + std::to_string(extent) + " bytes) is not inside one live buffer: " + why);
  TensorMap2d tm;
  tm.global = static_cast<const unsigned char*>(global);
  tm.elem_bytes = elem_bytes;
  tm.dims[0] = dim0;
  tm.dims[1] = dim1;
  tm.row_stride = row_stride;
  tm.box[0] = box0;
  tm.box[1] = box1;
  tm.swizzle = swizzle;
  return tm;
}

// ---------------------------------------------------------------- buffers

BufferBase::BufferBase(std::string name, std::size_t bytes)
    : name_(std::move(name)), bytes_(bytes) {
  base_ = static_cast<unsigned char*>(::operator new(bytes + 2 * kGuardBytes, std::align_val_t{256}));
  std::memset(base_, kGuardPattern, bytes + 2 * kGuardBytes);
  Registry& reg = registry();
  reg.bodies[reinterpret_cast<std::uintptr_t>(body())] = this;
}

BufferBase::~BufferBase() {
  Registry& reg = registry();
  reg.bodies.erase(reinterpret_cast<std::uintptr_t>(body()));
  ::operator delete(base_, std::align_val_t{256});
}

bool BufferBase::guards_intact() const {
  for (std::size_t i = 0; i < kGuardBytes; ++i)
    if (base_[i] != kGuardPattern || base_[kGuardBytes + bytes_ + i] != kGuardPattern) return false;
  return true;
}

// ---------------------------------------------------------------- launch

namespace {

void validate(const LaunchConfig& c) {
  const auto bad = [&](const std::string& why) {
    throw LaunchError("simt::launch of '" + c.kernel + "': " + why, LaunchReport{});
  };
  const auto pos = [](idx3 v) { return v.x > 0 && v.y > 0 && v.z > 0; };
  if (!pos(c.grid) || !pos(c.block) || !pos(c.cluster)) bad("every grid, block and cluster dimension must be >= 1");
  const std::uint64_t threads = std::uint64_t{c.block.x} * c.block.y * c.block.z;
  if (threads > 1024) bad("a block has at most 1024 threads, got " + std::to_string(threads));
  if (c.grid.x % c.cluster.x || c.grid.y % c.cluster.y || c.grid.z % c.cluster.z)
    bad("the cluster " + str(c.cluster) + " does not divide the grid " + str(c.grid));
  const std::uint64_t cl = std::uint64_t{c.cluster.x} * c.cluster.y * c.cluster.z;
  if (cl > 16) bad("a cluster has at most 16 blocks, got " + std::to_string(cl));
  if (c.smem_bytes > kMaxSmem)
    bad("dynamic shared memory " + std::to_string(c.smem_bytes) + " bytes exceeds sm_90's " +
        std::to_string(kMaxSmem));
}

void deadlock() {
  Run& r = *g_run;
  std::map<std::string, int> groups;
  for (const Thread& t : r.threads)
    if (t.state == State::kBlocked)
      ++groups["block " + str(r.blocks[t.block].bidx) + " waits in " + t.waiting + " at " +
               r.sites.name(t.wait_site)];
  std::string msg = "deadlock: no thread can proceed:";
  for (const auto& [what, n] : groups) msg += " " + std::to_string(n) + " threads of " + what + ";";
  std::uint32_t exited = 0;
  for (const Thread& t : r.threads) exited += t.state == State::kDone ? 1 : 0;
  msg += " " + std::to_string(exited) + " threads of the cluster have exited";
  r.seen.clear();  // a deadlock is always reported
  finding("deadlock", msg, msg);
  r.aborting = true;
  for (Thread& t : r.threads)
    if (t.state == State::kBlocked) make_ready(t);
}

void run_cluster(Run& r, idx3 first_block) {
  const LaunchConfig& c = *r.cfg;
  const std::uint32_t nb = c.cluster.x * c.cluster.y * c.cluster.z;
  r.threads_per_block = c.block.x * c.block.y * c.block.z;
  r.warps_per_block = (r.threads_per_block + 31) / 32;
  r.block_stride = ((c.smem_bytes + 2 * kSmemGuard + kSmemGuard - 1) / kSmemGuard) * kSmemGuard;
  r.arena_bytes = r.block_stride * nb;
  r.arena.assign(r.arena_bytes + kSmemGuard, 0xEE);
  const auto raw = reinterpret_cast<std::uintptr_t>(r.arena.data());
  r.arena_base = r.arena.data() + ((kSmemGuard - raw % kSmemGuard) % kSmemGuard);
  r.blocks.assign(nb, Block{});
  const std::uint32_t n = nb * r.threads_per_block;
  r.threads.clear();
  r.threads.resize(n);
  r.requests.assign(nb * r.warps_per_block, {});
  r.ready.clear();
  r.read_lists.clear();
  r.free_read_lists.clear();
  r.cl_count.assign(1, 0);
  r.cl_vc.assign(1, {});
  r.cl_waiters.assign(1, {});
  r.cl_done_arrives.clear();
  for (std::uint32_t k = 0; k < nb; ++k) {
    Block& b = r.blocks[k];
    const idx3 rel{k % c.cluster.x, (k / c.cluster.x) % c.cluster.y, k / (c.cluster.x * c.cluster.y)};
    b.bidx = idx3{first_block.x + rel.x, first_block.y + rel.y, first_block.z + rel.z};
    b.grid_linear = b.bidx.x + c.grid.x * (b.bidx.y + c.grid.y * b.bidx.z);
    b.smem = r.arena_base + k * r.block_stride + kSmemGuard;
    b.words.assign((c.smem_bytes + 3) / 4, Cell{});
    b.bytes.clear();
    b.warps.assign(r.warps_per_block, Coll{});
    b.live = r.threads_per_block;
    b.first_thread = k * r.threads_per_block;
    for (std::uint32_t i = 0; i < r.threads_per_block; ++i) {
      Thread& t = r.threads[b.first_thread + i];
      t.id = b.first_thread + i;
      t.block = k;
      t.linear = i;
      t.tidx = idx3{i % c.block.x, (i / c.block.x) % c.block.y, i / (c.block.x * c.block.y)};
      t.warp = i / 32;
      t.lane = i % 32;
      t.vc.assign(n, 0);
      t.vc[t.id] = 1;
      r.ready.push_back(&t);
    }
  }
  while (true) {
    if (r.ready.empty()) {
      bool all_done = true;
      for (const Thread& t : r.threads) all_done = all_done && t.state == State::kDone;
      if (all_done) break;
      deadlock();
      continue;
    }
    std::uniform_int_distribution<std::size_t> pick(0, r.ready.size() - 1);
    const std::size_t i = pick(r.rng);
    Thread* t = r.ready[i];
    r.ready[i] = r.ready.back();
    r.ready.pop_back();
    switch_to(*t);
  }
}

// Folds the requests of the cluster that just ran into the per-site totals and the mix.
void accumulate_requests(Run& r) {
  if (r.acc.size() < r.sites.size()) r.acc.resize(r.sites.size());
  InstructionMix& m = r.report.mix;
  for (const auto& per_site : r.requests)
    for (std::uint32_t site = 0; site < per_site.size(); ++site) {
      const SiteInfo& s = r.sites.at(site);
      SiteAcc& a = r.acc[site];
      for (const Request& q : per_site[site]) {
        if (q.n == 0) continue;
        ++a.requests;
        a.lanes += q.n;
        const std::uint32_t stored = std::min<std::uint32_t>(q.n, 32);
        if (s.space == "global" && r.opt->analysis) {
          std::uint64_t sec[64];
          int ns = 0;
          for (std::uint32_t i = 0; i < stored; ++i) {
            const std::uint64_t e = q.lanes[i], addr = e & 0xffffffffffffull, n = (e >> 48) & 0xff;
            for (std::uint64_t s32 = addr >> 5; s32 <= (addr + n - 1) >> 5 && ns < 64; ++s32)
              sec[ns++] = s32;
          }
          std::sort(sec, sec + ns);
          a.sectors += static_cast<std::uint64_t>(std::unique(sec, sec + ns) - sec);
        } else if (s.space == "shared" && r.opt->analysis) {
          const std::uint64_t n = (q.lanes[0] >> 48) & 0xff;
          const int lanes_per_phase = n <= 4 ? 32 : static_cast<int>(128 / n);
          int worst = 1;
          for (int ph = 0; ph < 32 / lanes_per_phase; ++ph) {
            std::uint64_t words[128];
            int nw = 0;
            for (std::uint32_t i = 0; i < stored; ++i) {
              const std::uint64_t e = q.lanes[i];
              if (static_cast<int>(e >> 56) / lanes_per_phase != ph) continue;
              const std::uint64_t addr = e & 0xffffffffffffull, bytes = (e >> 48) & 0xff;
              for (std::uint64_t w = addr >> 2; w <= (addr + bytes - 1) >> 2 && nw < 128; ++w)
                words[nw++] = w;
            }
            std::sort(words, words + nw);
            nw = static_cast<int>(std::unique(words, words + nw) - words);
            int per_bank[32] = {};
            for (int i = 0; i < nw; ++i) worst = std::max(worst, ++per_bank[words[i] % 32]);
          }
          a.ways_sum += static_cast<std::uint64_t>(worst);
          a.worst = std::max(a.worst, worst);
        }
        const std::string& op = s.op;
        if (s.space == "global") {
          if (op == "st") ++m.global_stores;
          else if (op == "atom") ++m.global_atomics;
          else if (op == "cp.async") ++m.cp_async;
          else ++m.global_loads;
        } else if (s.space == "shared" || s.space == "dsmem") {
          if (op == "st") ++m.shared_stores;
          else if (op == "atom") ++m.shared_atomics;
          else ++m.shared_loads;
        } else if (op == "shfl") {
          ++m.shuffles;
        } else if (op == "vote") {
          ++m.votes;
        } else if (op == "bar.sync") {
          ++m.barriers;
        } else if (op == "bar.warp.sync") {
          ++m.warp_syncs;
        } else if (op.rfind("barrier.cluster", 0) == 0) {
          ++m.cluster_barriers;
        }
      }
    }
  r.requests.clear();
}

void finish_analysis(Run& r) {
  LaunchReport& rep = r.report;
  if (r.acc.size() < r.sites.size()) r.acc.resize(r.sites.size());
  for (std::uint32_t id = 0; id < r.sites.size(); ++id) {
    const SiteInfo& s = r.sites.at(id);
    if (s.space != "global" && s.space != "shared" && s.space != "dsmem") continue;
    const SiteAcc& a = r.acc[id];
    if (a.requests == 0) continue;
    SiteStats st;
    st.site = s.name;
    st.space = s.space;
    st.op = s.op;
    st.access_bytes = s.bytes;
    st.requests = a.requests;
    st.lanes = a.lanes;
    st.sectors = a.sectors;
    st.sectors_per_request = static_cast<double>(a.sectors) / static_cast<double>(a.requests);
    st.worst_bank_ways = a.worst;
    st.mean_bank_ways = static_cast<double>(a.ways_sum) / static_cast<double>(a.requests);
    rep.sectors_g += a.sectors;
    rep.sites.push_back(st);
  }
  std::sort(rep.sites.begin(), rep.sites.end(),
            [](const SiteStats& a, const SiteStats& b) { return a.site < b.site; });
  const double bytes = static_cast<double>(rep.sectors_g) * 32.0;
  if (r.cfg->compulsory_bytes > 0) rep.traffic_ratio = bytes / r.cfg->compulsory_bytes;
  InstructionMix& m = rep.mix;
  const auto warp_level = [](std::uint64_t n) { return (n + 31) / 32; };
  m.fp32_fma = warp_level(r.alu[0]);
  m.fp32_add = warp_level(r.alu[1]);
  m.fp32_mul = warp_level(r.alu[2]);
  m.fp32_div = warp_level(r.alu[3]);
  m.fp32_sqrt = warp_level(r.alu[4]);
  rep.cuda_core_flops = 2.0 * static_cast<double>(r.alu[0]) +
                        static_cast<double>(r.alu[1] + r.alu[2] + r.alu[3] + r.alu[4]);
  const double mma = r.cfg->mma_flops > 0
                         ? r.cfg->mma_flops / kFp8Peak
                         : rep.mma_flops_bf16 / kBf16Peak + rep.mma_flops_fp8 / kFp8Peak;
  const double alu = rep.cuda_core_flops / kFp32Peak;
  rep.t_lower_h100_us = std::max({bytes / kHbmH100, mma, alu}) * 1e6;
  rep.t_lower_h200_us = std::max({bytes / kHbmH200, mma, alu}) * 1e6;
}

}  // namespace

bool LaunchReport::has(const std::string& kind) const {
  return std::any_of(findings.begin(), findings.end(),
                     [&](const Finding& f) { return f.kind == kind; });
}

std::string LaunchReport::summary() const {
  std::string s;
  for (const Finding& f : findings) s += "[" + f.kind + "] " + f.message + "\n";
  return s;
}

std::string LaunchReport::json() const {
  nlohmann::ordered_json j;
  j["kernel"] = config.kernel;
  j["grid"] = {config.grid.x, config.grid.y, config.grid.z};
  j["block"] = {config.block.x, config.block.y, config.block.z};
  j["cluster"] = {config.cluster.x, config.cluster.y, config.cluster.z};
  j["smem_bytes"] = config.smem_bytes;
  j["seed"] = seed;
  j["sectors_g"] = sectors_g;
  j["compulsory_bytes"] = config.compulsory_bytes;
  j["traffic_ratio"] = traffic_ratio;
  j["t_lower_us"] = {{"H100", t_lower_h100_us}, {"H200", t_lower_h200_us}};
  j["mma_flops"] = {{"bf16", mma_flops_bf16}, {"fp8", mma_flops_fp8}};
  j["cuda_core_flops"] = cuda_core_flops;
  j["mix"] = {{"tma", mix.tma},
              {"global_loads", mix.global_loads},   {"global_stores", mix.global_stores},
              {"global_atomics", mix.global_atomics}, {"shared_loads", mix.shared_loads},
              {"shared_stores", mix.shared_stores}, {"shared_atomics", mix.shared_atomics},
              {"cp_async", mix.cp_async},           {"shuffles", mix.shuffles},
              {"votes", mix.votes},                 {"barriers", mix.barriers},
              {"warp_syncs", mix.warp_syncs},       {"cluster_barriers", mix.cluster_barriers},
              {"mma", mix.mma},                     {"fp32_fma", mix.fp32_fma},
              {"fp32_add", mix.fp32_add},           {"fp32_mul", mix.fp32_mul},
              {"fp32_div", mix.fp32_div},           {"fp32_sqrt", mix.fp32_sqrt}};
  auto& sites_j = j["sites"] = nlohmann::ordered_json::array();
  for (const SiteStats& s : sites)
    sites_j.push_back({{"site", s.site},
                       {"space", s.space},
                       {"op", s.op},
                       {"access_bytes", s.access_bytes},
                       {"requests", s.requests},
                       {"lanes", s.lanes},
                       {"sectors", s.sectors},
                       {"sectors_per_request", s.sectors_per_request},
                       {"worst_bank_ways", s.worst_bank_ways},
                       {"mean_bank_ways", s.mean_bank_ways}});
  auto& f = j["findings"] = nlohmann::ordered_json::array();
  for (const Finding& x : findings) f.push_back({{"kind", x.kind}, {"message", x.message}});
  return j.dump(2);
}

void write_report(const LaunchReport& r, const std::string& path) {
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  {
    std::ofstream out(tmp);
    if (!out) throw IoError("simt: cannot write " + tmp);
    out << r.json() << "\n";
    if (!out.flush()) throw IoError("simt: write failed: " + tmp);
  }
  std::filesystem::rename(tmp, path);
}

LaunchReport launch(const LaunchConfig& cfg, const std::function<void()>& kernel,
                    const RunOptions& opt) {
  validate(cfg);
  if (g_run != nullptr) throw Error("simt::launch: launches do not nest ('" + cfg.kernel + "')");
  Run r;
  r.cfg = &cfg;
  r.opt = &opt;
  r.kernel = &kernel;
  r.report.config = cfg;
  r.report.seed = opt.seed;
  r.rng.seed(opt.seed * 0x9E3779B97F4A7C15ull + 1);
  std::vector<idx3> clusters;
  for (unsigned z = 0; z < cfg.grid.z; z += cfg.cluster.z)
    for (unsigned y = 0; y < cfg.grid.y; y += cfg.cluster.y)
      for (unsigned x = 0; x < cfg.grid.x; x += cfg.cluster.x) clusters.push_back({x, y, z});
  std::shuffle(clusters.begin(), clusters.end(), r.rng);
  g_run = &r;
  try {
    for (const idx3& c : clusters) {
      run_cluster(r, c);
      accumulate_requests(r);
      if (r.aborting) break;
    }
  } catch (...) {
    g_run = nullptr;
    throw;
  }
  finish_analysis(r);
  g_run = nullptr;
  r.threads.clear();
  if (!r.report.ok() && opt.throw_on_error)
    throw LaunchError("simt::launch of '" + cfg.kernel + "' (seed " + std::to_string(opt.seed) +
                          "):\n" + r.report.summary(),
                      r.report);
  return std::move(r.report);
}

}  // namespace v4ref::cuda::simt
