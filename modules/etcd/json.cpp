// SPDX-License-Identifier: MIT
// Boost.JSON's compiled part, header-only style: the one unit of openlock.etcd that includes
// <boost/json/src.hpp> (a second one would define its functions twice).
#include <boost/json/src.hpp>
