import Testing
@testable import FastDemux
@Suite struct FastDemuxSmokeTests {}
