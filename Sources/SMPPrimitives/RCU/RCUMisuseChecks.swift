// Per-thread RCU bookkeeping and the misuse checks built on it.
//
// Misuse that can be caught is caught with a clear trap: double
// registration and unregistering an unregistered thread in every build; a
// read section or quiescent state on an unregistered thread, synchronize or
// barrier inside a read section, an unbalanced unlock in debug builds.
// Registration state is tracked in a C `_Thread_local` (release builds too:
// it is cheap and not on any hot path); read-section nesting only in debug
// builds, so release read sections stay free.
import CURCU

// The only caller of curcu_thread_state() (see shim.h: a static inline
// function's thread-local has one copy per calling object file, so every
// other file goes through this function). Not inlinable for that reason.
@usableFromInline
func _rcuThreadState() -> UnsafeMutablePointer<curcu_thread_state> {
    curcu_thread_state()
}

@usableFromInline
func _rcuMisuse(_ message: String, file: StaticString = #fileID, line: UInt = #line) -> Never {
    fatalError("RCU misuse: " + message, file: file, line: line)
}
