// Precompiled header shared by every LibTorch-using target (NOTES.md hazard 5: one translation unit
// including <torch/torch.h> costs ~20 s to parse). Only stable, heavy headers belong here.
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
