// Fault plans: the text form, trigger matching, state transitions and seeded determinism.
#include "faults/fault-engine.h"

#include <gtest/gtest.h>

#include <capnp/message.h>

#include "faults/fault-plan.h"

namespace bulkhead {
namespace {

class Plan {
 public:
  explicit Plan(const std::string& text) {
    error = std::string(parseFaultPlan(text, root()).message());
  }
  protocol::FaultPlan::Builder root() { return message.getRoot<protocol::FaultPlan>(); }
  protocol::FaultPlan::Reader reader() { return message.getRoot<protocol::FaultPlan>().asReader(); }
  std::string error;

 private:
  capnp::MallocMessageBuilder message;
};

// The events (1-based) on which rule `rule` fires over `events` writes to port 0x3f8.
std::vector<uint64_t> firings(const std::string& text, int events, uint16_t rule = 0) {
  Plan plan(text);
  EXPECT_EQ(plan.error, "");
  FaultEngine engine;
  engine.load(plan.reader(), "serial");
  std::vector<uint64_t> out;
  for (int i = 0; i < events; ++i) {
    for (const FiredFault& fired : engine.onEvent(FaultEventKind::WRITE, 0x3f8, i & 0xff)) {
      if (fired.rule == rule) out.push_back(fired.event);
    }
  }
  return out;
}

TEST(FaultPlanText, ParsesEveryField) {
  Plan plan(
      "# comment\n"
      "seed 0x2a\n"
      "rule flip device=serial on=read address=0x3fd value=7 nth=3 every=2 count=4 from=10 "
      "to=90 probability=0.5 when=a set=b action=flip:0x20  # trailing comment\n"
      "rule kill device=debug-exit on=access once action=crash\n");
  ASSERT_EQ(plan.error, "");
  auto p = plan.reader();
  EXPECT_EQ(p.getSeed(), 42u);
  ASSERT_EQ(p.getRules().size(), 2u);
  auto r = p.getRules()[0];
  EXPECT_EQ(kj::StringPtr(r.getName()), "flip");
  EXPECT_EQ(r.getOn(), protocol::FaultEvent::READ);
  EXPECT_TRUE(r.getHasAddress());
  EXPECT_EQ(r.getAddress(), 0x3fdu);
  EXPECT_EQ(r.getValue(), 7u);
  EXPECT_EQ(r.getNth(), 3u);
  EXPECT_EQ(r.getEvery(), 2u);
  EXPECT_EQ(r.getCount(), 4u);
  EXPECT_EQ(r.getFromEvent(), 10u);
  EXPECT_EQ(r.getToEvent(), 90u);
  EXPECT_DOUBLE_EQ(r.getProbability(), 0.5);
  EXPECT_EQ(kj::StringPtr(r.getWhenState()), "a");
  EXPECT_EQ(kj::StringPtr(r.getSetState()), "b");
  EXPECT_EQ(describeFaultAction(r.getAction()), "flip:0x20");
  EXPECT_EQ(p.getRules()[1].getCount(), 1u);
  EXPECT_EQ(describeFaultAction(p.getRules()[1].getAction()), "crash");
}

TEST(FaultPlanText, MistakesNameTheLine) {
  struct Case {
    const char* text;
    const char* mentions;
  } cases[] = {
      {"seed\n", "line 1: seed needs one number"},
      {"\n\nbogus 1\n", "line 3: unknown keyword"},
      {"rule x on=read action=drop\n", "names no device"},
      {"rule x device=serial action=drop\n", "needs on="},
      {"rule x device=serial on=read\n", "has no action"},
      {"rule x device=serial on=read action=explode\n", "unknown action 'explode'"},
      {"rule x device=serial on=write action=flip:1\n", "flip needs on=read"},
      {"rule x device=serial on=read action=corrupt:1\n", "corrupt needs on=write"},
      {"rule x device=serial on=read action=lose-irq\n", "lose-irq needs on=irq"},
      {"rule x device=serial on=read action=flip\n", "needs a number"},
      {"rule x device=serial on=read probability=2 action=drop\n", "between 0 and 1"},
      {"rule x device=serial on=read nth=0 action=drop\n", "nth counts from 1"},
      {"rule x device=serial on=read colour=red action=drop\n", "unknown field 'colour'"},
      {"rule x device=serial on=read loud action=drop\n", "not key=value"},
      {"rule x device=virtio-blk on=read action=dma-refuse\n", "dma-refuse needs on=dma"},
      {"rule x device=virtio-blk on=dma action=drop\n", "drop needs on=access"},
      {"rule x device=virtio-blk on=dma action=dma-short\n", "needs a number"},
      {"rule x device=virtio-blk on=dmx action=dma-refuse\n", "on=dmx: use access"},
  };
  for (const Case& c : cases) {
    Plan plan(c.text);
    EXPECT_NE(plan.error.find(c.mentions), std::string::npos) << c.text << " -> " << plan.error;
  }
}

TEST(FaultEngine, NthEveryAndCount) {
  EXPECT_EQ(firings("rule r device=serial on=write nth=3 action=drop", 10),
            (std::vector<uint64_t>{3}));
  EXPECT_EQ(firings("rule r device=serial on=write nth=3 every=2 action=drop", 10),
            (std::vector<uint64_t>{3, 5, 7, 9}));
  EXPECT_EQ(firings("rule r device=serial on=write nth=1 every=1 count=3 action=drop", 10),
            (std::vector<uint64_t>{1, 2, 3}));
}

TEST(FaultEngine, MatchesKindAddressValueAndWindow) {
  EXPECT_EQ(firings("rule r device=serial on=read every=1 action=drop", 5).size(), 0u);
  EXPECT_EQ(firings("rule r device=serial on=access every=1 action=drop", 5).size(), 5u);
  EXPECT_EQ(firings("rule r device=serial on=write address=0x3f9 every=1 action=drop", 5).size(),
            0u);
  // value = i & 0xff: only the write of 4 matches.
  EXPECT_EQ(firings("rule r device=serial on=write value=4 action=drop", 10),
            (std::vector<uint64_t>{5}));
  EXPECT_EQ(firings("rule r device=serial on=write every=1 from=4 to=6 action=drop", 10),
            (std::vector<uint64_t>{4, 5, 6}));
  // Rules for another device are not loaded.
  EXPECT_EQ(firings("rule r device=debug-exit on=write every=1 action=drop", 5).size(), 0u);
}

TEST(FaultEngine, DmaRulesSeeOnlyDmaEvents) {
  Plan plan(
      "rule d device=serial on=dma address=0x2000 nth=2 action=dma-flip:0x80\n"
      "rule a device=serial on=access every=1 action=drop\n");
  ASSERT_EQ(plan.error, "");
  FaultEngine engine;
  engine.load(plan.reader(), "serial");
  std::vector<std::string> fired;
  for (int i = 0; i < 3; ++i) {
    for (const FiredFault& f : engine.onEvent(FaultEventKind::DMA, 0x2000, 512)) {
      fired.push_back("dma:" + describeFaultAction(f.action));
    }
    for (const FiredFault& f : engine.onEvent(FaultEventKind::READ, 0x2000, 0)) {
      fired.push_back("read:" + describeFaultAction(f.action));
    }
  }
  EXPECT_EQ(fired,
            (std::vector<std::string>{"read:drop", "dma:dma-flip:0x80", "read:drop", "read:drop"}));
}

TEST(FaultEngine, StateTransitionsGateRules) {
  // "Fail the second write after the first interrupt."
  Plan plan(
      "rule arm  device=serial on=irq value=1 once set=armed action=delay-irq:0\n"
      "rule fail device=serial on=write when=armed nth=2 once action=drop\n");
  ASSERT_EQ(plan.error, "");
  FaultEngine engine;
  engine.load(plan.reader(), "serial");
  auto writeFires = [&]() {
    for (const FiredFault& f : engine.onEvent(FaultEventKind::WRITE, 0x3f8, 0)) {
      if (f.rule == 1) return true;
    }
    return false;
  };
  EXPECT_FALSE(writeFires());
  EXPECT_FALSE(writeFires());
  EXPECT_FALSE(writeFires());  // not armed yet: writes do not count
  ASSERT_EQ(engine.onEvent(FaultEventKind::IRQ, 4, 1).size(), 1u);  // arms
  EXPECT_EQ(engine.state().state, 1);
  EXPECT_FALSE(writeFires());
  EXPECT_TRUE(writeFires());
  EXPECT_FALSE(writeFires());                                       // once
  EXPECT_EQ(engine.onEvent(FaultEventKind::IRQ, 4, 1).size(), 0u);  // arm fired once only
}

TEST(FaultEngine, SameSeedSameFiringsOtherSeedOthers) {
  const char* rule = "rule r device=serial on=write every=1 probability=0.3 action=drop\n";
  auto a = firings(std::string("seed 7\n") + rule, 2000);
  auto b = firings(std::string("seed 7\n") + rule, 2000);
  auto c = firings(std::string("seed 8\n") + rule, 2000);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  // About 30 % fire.
  EXPECT_GT(a.size(), 500u);
  EXPECT_LT(a.size(), 700u);
}

TEST(FaultEngine, ARulesRandomnessDoesNotDependOnOtherRules) {
  const char* rule = "rule r device=serial on=write every=1 probability=0.3 action=drop\n";
  auto alone = firings(std::string("seed 7\n") + rule, 500);
  auto withOther =
      firings(std::string("seed 7\n") + rule +
                  "rule s device=serial on=write every=1 probability=0.5 action=drop\n",
              500, 0);
  EXPECT_EQ(alone, withOther);
}

TEST(FaultEngine, ServerAndSupervisorRulesAreSplit) {
  Plan plan(
      "rule a device=serial on=write every=1 action=drop\n"
      "rule b device=serial on=write every=1 action=kill\n"
      "rule c device=serial on=write every=1 action=corrupt:1\n");
  ASSERT_EQ(plan.error, "");
  FaultEngine server, supervisor;
  server.load(plan.reader(), "serial", FaultEngine::Side::SERVER);
  supervisor.load(plan.reader(), "serial", FaultEngine::Side::SUPERVISOR);
  auto fired = server.onEvent(FaultEventKind::WRITE, 0, 0);
  ASSERT_EQ(fired.size(), 2u);
  EXPECT_EQ(server.ruleName(fired[0].rule), "a");
  EXPECT_EQ(server.ruleName(fired[1].rule), "c");
  auto supervised = supervisor.onEvent(FaultEventKind::WRITE, 0, 0);
  ASSERT_EQ(supervised.size(), 1u);
  EXPECT_EQ(supervisor.ruleName(supervised[0].rule), "b");
  EXPECT_TRUE(isSupervisorAction(supervised[0].action));
}

TEST(FaultEngine, StateSurvivesACopy) {
  // The engine's state is a plain struct: a restarted server continues the sequence.
  const char* text = "seed 3\nrule r device=serial on=write every=1 probability=0.5 action=drop\n";
  Plan plan(text);
  FaultEngine first;
  first.load(plan.reader(), "serial");
  for (int i = 0; i < 100; ++i) first.onEvent(FaultEventKind::WRITE, 0, 0);
  FaultEngine second;
  second.load(plan.reader(), "serial");
  second.state() = first.state();
  for (int i = 0; i < 100; ++i) {
    EXPECT_EQ(first.onEvent(FaultEventKind::WRITE, 0, 0).size(),
              second.onEvent(FaultEventKind::WRITE, 0, 0).size());
  }
}

// The engine runs at most 32 rules per device and 16 states: a plan over either is refused by
// the parser, in one line, before any device loads it (a 40-rule plan once aborted the core).
TEST(FaultPlanText, APlanOverTheEnginesLimitsIsRefusedByTheParser) {
  std::string forty;
  for (int i = 0; i < 40; ++i) {
    forty += "rule r" + std::to_string(i) + " device=serial on=write action=drop\n";
  }
  Plan tooMany(forty);
  EXPECT_NE(tooMany.error.find("device serial has more than 32 rules"), std::string::npos)
      << tooMany.error;
  std::string split;  // 32 each for two devices is fine
  for (int i = 0; i < 32; ++i) {
    split += "rule a" + std::to_string(i) + " device=serial on=write action=drop\n";
    split += "rule b" + std::to_string(i) + " device=cmos on=write action=drop\n";
  }
  EXPECT_EQ(Plan(split).error, "");
  std::string states;
  for (int i = 0; i < 16; ++i) {
    states += "rule s" + std::to_string(i) + " device=serial on=write set=state" +
              std::to_string(i) + " action=drop\n";
  }
  EXPECT_NE(Plan(states).error.find("names 16 states"), std::string::npos) << Plan(states).error;
}

// A binary file given as a plan is refused in one printable line: its bytes are not echoed.
TEST(FaultPlanText, GarbageIsRefusedWithoutEchoingIt) {
  std::string garbage = "rule \x1b[31m\x01\xff\x80 device=serial";
  for (int i = 0; i < 500; ++i) garbage += static_cast<char>(i * 37 + 11);
  Plan plan(garbage);
  ASSERT_FALSE(plan.error.empty());
  for (unsigned char c : plan.error) {
    EXPECT_TRUE(c >= 0x20 && c < 0x7f) << "byte " << static_cast<int>(c) << " in " << plan.error;
  }
  EXPECT_LT(plan.error.size(), 300u);
}

}  // namespace
}  // namespace bulkhead
