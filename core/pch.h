// Precompiled header shared by every LibTorch-using target (docs/HAZARDS.md hazard 5: parsing
// <torch/torch.h> dominates a translation unit's compile time). Only stable, heavy headers belong
// here.
#pragma once

#include <torch/torch.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>
