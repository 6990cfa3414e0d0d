// NetStack: the endpoint stack above FastDemux. One folder per concept:
//   Output/       IPv4/IPv6 headers, UDP, ICMP and ICMPv6 builders, fragmentation
//   Reassembly/   IPv4 and IPv6 fragment reassembly
// (Sockets, the UDP endpoint and the TUN-driven stack join them.)
@_exported import FastDemux
