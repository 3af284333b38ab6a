// SPDX-License-Identifier: MIT
// async_acquire: the acquisition loop (acquisition.cpp) driven by a coroutine on the caller's executor, so
// that no thread blocks and a thousand waiters share one io_context thread.
module;
#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/multiple_exceptions.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/system/error_code.hpp>
#include <boost/system/system_error.hpp>
#include <chrono>
#include <cstdint>
#include <exception>
#include <memory>
#include <optional>
#include <system_error>

module openlock;
import :lock_object;
import :protocol;
import :sys;

namespace openlock {
namespace {

namespace asio = boost::asio;
using boost::system::error_code;

asio::awaitable<bool> cancelled() {
    auto const state = co_await asio::this_coro::cancellation_state;
    co_return state.cancelled() != asio::cancellation_type::none;
}

// A registration on the gate, withdrawn on every way out of the wait (nothing may call into our executor
// later).
class gate_ticket {
public:
    explicit gate_ticket(file_lock::impl& lock) : lock_(lock) {}
    gate_ticket(gate_ticket const&) = delete;
    gate_ticket& operator=(gate_ticket const&) = delete;
    ~gate_ticket() {
        if (number != 0 && !entered_) lock_.forget_gate_waiter(number);
    }
    void entered() { entered_ = true; }
    std::uint64_t number = 0;

private:
    file_lock::impl& lock_;
    bool entered_ = false;
};

// Waits for the path's in-process gate without blocking the thread: leaving the gate wakes us through a
// timer.
asio::awaitable<error_code> enter_gate(std::shared_ptr<file_lock::impl> lock, detail::deadline until) {
    auto const executor = co_await asio::this_coro::executor;
    gate_ticket ticket{*lock};
    for (;;) {
        auto timer = std::make_shared<asio::steady_timer>(
            executor, until.value_or(asio::steady_timer::time_point::max()));
        if (lock->abandoned) co_return asio::error::operation_aborted;
        auto wake = [timer, executor] { asio::post(executor, [timer] { timer->cancel(); }); };
        if (lock->try_enter_gate(std::move(wake), ticket.number)) {
            ticket.entered();
            co_return error_code{};
        }
        error_code ignored;
        co_await timer->async_wait(asio::redirect_error(asio::use_awaitable, ignored));
        if (co_await cancelled() || lock->abandoned) co_return asio::error::operation_aborted;
        if (detail::expired(until)) co_return asio::error::timed_out;
    }
}

error_code as_asio_error(detail::failure const& failure) {
    if (failure.code == errc::timeout) return asio::error::timed_out;
    return error_code{failure.code};
}

// Leaves the object's gate on every way out of the loop (errors, cancellation, exceptions) except success.
class gate_exit {
public:
    explicit gate_exit(file_lock::impl& lock) : lock_(lock) {}
    gate_exit(gate_exit const&) = delete;
    gate_exit& operator=(gate_exit const&) = delete;
    ~gate_exit() {
        if (!acquired_) lock_.leave_gate();
    }
    void acquired() { acquired_ = true; }

private:
    file_lock::impl& lock_;
    bool acquired_ = false;
};

asio::awaitable<error_code> acquire_async(std::shared_ptr<file_lock::impl> lock, detail::deadline until) {
    co_await asio::this_coro::reset_cancellation_state(asio::enable_total_cancellation());
    if (auto const entered = co_await enter_gate(lock, until)) co_return entered;
    gate_exit exit{*lock};
    detail::acquisition attempt{*lock, until};
    for (;;) {
        detail::failure failure;
        switch (attempt.step(failure)) {
        case detail::acquisition::next::acquired:
            exit.acquired();
            if (lock->abandoned) {
                // The object went away while we claimed: its destructor may have looked before we held, so
                // release here (a second release finds nothing held and does nothing).
                detail::failure ignored;
                lock->release(ignored);
                co_return asio::error::operation_aborted;
            }
            co_return error_code{};
        case detail::acquisition::next::failed:
            co_return as_asio_error(failure);
        case detail::acquisition::next::wait:
            break;
        }
        // Cancellation throws out of these waits; between two looks nothing of ours is on disk.
        bool woken = false;
        if (attempt.events_may_end_pause()) {
            woken = co_await attempt.wake().async_wait_for(attempt.pause());
            if (woken) attempt.woken_by_event();
        } else {
            asio::steady_timer pause{co_await asio::this_coro::executor, attempt.pause()};
            co_await pause.async_wait(asio::use_awaitable);
        }
        if (lock->abandoned) {
            // Leaving without a look: a ring that woke us (and maybe no one else) is passed on.
            if (woken) attempt.wake().ring();
            co_return asio::error::operation_aborted;
        }
    }
}

error_code code_of(std::exception_ptr const& thrown) {
    try {
        std::rethrow_exception(thrown);
    } catch (boost::system::system_error const& e) {
        return e.code();
    } catch (std::system_error const& e) {
        return error_code{e.code()};
    } catch (asio::multiple_exceptions const& e) {
        return code_of(e.first_exception());
    } catch (...) {
        return asio::error::operation_aborted;
    }
}

} // namespace

void file_lock::start_async_acquire(asio::any_io_executor const& executor, std::optional<duration> timeout,
                                    asio::any_completion_handler<void(error_code)> handler) {
    auto const slot = asio::get_associated_cancellation_slot(handler);
    auto const until = timeout ? detail::deadline_after(*timeout) : std::nullopt;
    // A strand: a gate wake-up posted from another thread runs only after the coroutine has started the wait
    // it ends (on a multi-threaded executor it could otherwise run first and be lost).
    asio::co_spawn(
        asio::make_strand(executor), acquire_async(impl_, until),
        asio::bind_cancellation_slot(slot, [handler = std::move(handler)](std::exception_ptr const& thrown,
                                                                          error_code result) mutable {
            if (thrown) result = code_of(thrown);
            std::move(handler)(result);
        }));
}

} // namespace openlock
