#include "plugins/re2_pattern.h"

#include <re2/re2.h>

#include <memory>
#include <new>
#include <stdexcept>
#include <valijson/constraint_builder.hpp>
#include <valijson/constraints/concrete_constraints.hpp>
#include <valijson/internal/adapter.hpp>
#include <valijson/schema_parser.hpp>
#include <valijson/validation_results.hpp>

namespace gpuvisor {

namespace {

std::shared_ptr<const re2::RE2> compile(const std::string& pattern) {
  re2::RE2::Options options;
  options.set_log_errors(false);  // the error goes to the caller, not to stderr
  return std::make_shared<const re2::RE2>(pattern, options);
}

class Re2Pattern : public valijson::constraints::PolyConstraint {
 public:
  explicit Re2Pattern(std::shared_ptr<const re2::RE2> re) : re_(std::move(re)) {}

  bool validate(const valijson::adapters::Adapter& target, const std::vector<std::string>& context,
                valijson::ValidationResults* results) const override {
    // The validator's types are strict: "pattern" looks at strings only, as valijson's own did.
    if (!target.isString()) return true;
    if (re2::RE2::PartialMatch(target.asString(), *re_)) return true;
    // valijson's own words, so that a violation reads as it did before RE2.
    if (results != nullptr) {
      results->pushError(context, "Failed to match regex specified by 'pattern' constraint.");
    }
    return false;
  }

 private:
  Constraint* cloneInto(void* memory) const override { return new (memory) Re2Pattern(*this); }
  size_t sizeOf() const override { return sizeof(Re2Pattern); }

  std::shared_ptr<const re2::RE2> re_;  // compiled once per parsed schema, shared by its copies
};

class Re2PatternBuilder : public valijson::ConstraintBuilder {
 public:
  valijson::constraints::Constraint* make(const valijson::adapters::Adapter& value) const override {
    if (!value.isString()) {
      throw std::runtime_error("Expected string value for 'pattern' constraint.");
    }
    auto re = compile(value.asString());
    if (!re->ok()) throw std::runtime_error("'pattern' is not valid for RE2: " + re->error());
    return new Re2Pattern(std::move(re));
  }
};

}  // namespace

std::optional<std::string> re2_problem(const std::string& pattern) {
  const auto re = compile(pattern);
  if (re->ok()) return std::nullopt;
  return re->error();
}

void add_re2_pattern(valijson::SchemaParser& parser) {
  // The parser owns and deletes the builder.
  parser.addConstraintBuilder(kRe2PatternKey, new Re2PatternBuilder());
}

}  // namespace gpuvisor
