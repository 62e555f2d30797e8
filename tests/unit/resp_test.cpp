// cache/resp.h: commands encoded, replies parsed from bytes split at every
// boundary, and every bound refused with a reason.
#include "cache/resp.h"

#include <gtest/gtest.h>

namespace {

using cache::RedisReply;
using cache::resp::Parser;
using Type = RedisReply::Type;

// Every reply in bytes, fed in pieces: cuts are the offsets where a piece ends.
std::vector<RedisReply> parse(std::string_view bytes, const std::vector<size_t>& cuts, Parser::Status* last = nullptr,
                              size_t limit = 1 << 20) {
  Parser p(limit);
  std::vector<RedisReply> out;
  size_t from = 0;
  Parser::Status st = Parser::Status::More;
  std::vector<size_t> ends = cuts;
  ends.push_back(bytes.size());
  for (size_t end : ends) {
    std::string_view piece = bytes.substr(from, end - from);
    from = end;
    RedisReply r;
    while ((st = p.next(piece, r)) == Parser::Status::Reply) out.push_back(std::move(r));
    if (st == Parser::Status::Invalid) break;
    EXPECT_TRUE(piece.empty());
  }
  if (last) *last = st;
  return out;
}

std::string describe(const RedisReply& r) {
  std::string s = std::to_string(int(r.type)) + ":" + std::to_string(r.integer) + ":" + r.str;
  if (r.type == Type::Array) {
    s += "[";
    for (const auto& e : r.elements) s += describe(e) + ",";
    s += "]";
  }
  return s;
}

const std::string kReplies =
    "+OK\r\n-ERR wrong\r\n:-42\r\n$5\r\nhe\r\nl\r\n$0\r\n\r\n$-1\r\n*-1\r\n*0\r\n"
    "*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n*2\r\n:1\r\n*1\r\n+x\r\n";

TEST(Resp, EncodesCommandsAsArraysOfBulkStrings) {
  std::string out;
  cache::resp::encode(out, {"SET", "k", std::string("a\0\r\nb", 5), ""});
  EXPECT_EQ(out, std::string("*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\na\0\r\nb\r\n$0\r\n\r\n", 37));
}

TEST(Resp, ParsesEveryTypeSplitAtEveryByte) {
  std::vector<RedisReply> whole = parse(kReplies, {});
  ASSERT_EQ(whole.size(), 9u);
  EXPECT_EQ(whole[0].type, Type::Status);
  EXPECT_EQ(whole[0].str, "OK");
  EXPECT_EQ(whole[1].type, Type::Error);
  EXPECT_EQ(whole[1].str, "ERR wrong");
  EXPECT_EQ(whole[2].type, Type::Integer);
  EXPECT_EQ(whole[2].integer, -42);
  EXPECT_EQ(whole[3].type, Type::String);
  EXPECT_EQ(whole[3].str, "he\r\nl");   // a bulk string's bytes are taken by length
  EXPECT_EQ(whole[4].type, Type::String);
  EXPECT_EQ(whole[4].str, "");
  EXPECT_EQ(whole[5].type, Type::Nil);
  EXPECT_EQ(whole[6].type, Type::Nil);
  EXPECT_EQ(whole[7].type, Type::Array);
  EXPECT_TRUE(whole[7].elements.empty());
  ASSERT_EQ(whole[8].elements.size(), 3u);
  EXPECT_EQ(whole[8].elements[0].str, "message");
  EXPECT_EQ(whole[8].elements[2].elements[1].elements[0].str, "x");

  std::string expected;
  for (const auto& r : whole) expected += describe(r) + ";";
  auto joined = [](const std::vector<RedisReply>& v) {
    std::string s;
    for (const auto& r : v) s += describe(r) + ";";
    return s;
  };
  for (size_t cut = 0; cut <= kReplies.size(); cut++) EXPECT_EQ(joined(parse(kReplies, {cut})), expected) << cut;
  std::vector<size_t> every;
  for (size_t i = 1; i < kReplies.size(); i++) every.push_back(i);
  EXPECT_EQ(joined(parse(kReplies, every)), expected);
}

TEST(Resp, RefusesWhatItDoesNotUnderstandOrCannotHold) {
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"%1\r\n", "type byte"},            // RESP3 map: we never send HELLO 3
      {"_\r\n", "type byte"},
      {"+OK\n", "CR LF"},
      {"\r\n", "CR LF"},
      {":12x\r\n", "number"},
      {":\r\n", "number"},
      {"$-2\r\n", "bulk string"},
      {"$2000000\r\n", "bulk string"},     // more than the 1 MB limit of this parser
      {"$3\r\nabcd\r\n", "CR LF"},
      {"*-2\r\n", "array"},
      {"*999999999\r\n", "array"},
      {"*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n", "nested"},
      {"+" + std::string(70000, 'x') + "\r\n", "64 KB"},
  };
  for (const auto& [bytes, why] : bad) {
    Parser p(1 << 20);
    std::string_view in = bytes;
    RedisReply r;
    EXPECT_EQ(p.next(in, r), Parser::Status::Invalid) << bytes.substr(0, 40);
    EXPECT_NE(p.error().find(why), std::string::npos) << p.error();
    std::string_view more = "+OK\r\n";
    EXPECT_EQ(p.next(more, r), Parser::Status::Invalid);   // and stays so
  }
  // Eight levels are fine; the whole reply counts against the limit, not each piece.
  Parser::Status st;
  EXPECT_EQ(parse("*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n", {}).size(), 1u);
  std::string big = "*3\r\n$400\r\n" + std::string(400, 'a') + "\r\n$400\r\n" + std::string(400, 'b') + "\r\n$400\r\n" +
                    std::string(400, 'c') + "\r\n";
  EXPECT_EQ(parse(big, {}, &st, 1300 + 3 * sizeof(RedisReply)).size(), 1u);   // elements count too
  EXPECT_TRUE(parse(big, {100, 500, 900}, &st, 1300).empty());
  EXPECT_EQ(st, Parser::Status::Invalid);
  // The limit is per reply: many small replies pass.
  std::string many;
  for (int i = 0; i < 1000; i++) many += ":1\r\n";
  EXPECT_EQ(parse(many, {}, &st, 100).size(), 1000u);
  // 64 MB of "+\r\n" would make 22 million elements of 72 bytes: refused from its count.
  Parser p(64 << 20);
  std::string_view huge = "*22369616\r\n";
  RedisReply r;
  EXPECT_EQ(p.next(huge, r), Parser::Status::Invalid);
  EXPECT_NE(p.error().find("array"), std::string::npos) << p.error();
}

}  // namespace
