/// FastDemux: the NetBSD "fast protocol and port demultiplexing" design on
/// top of SMPPrimitives.
public enum FastDemuxModule {}
