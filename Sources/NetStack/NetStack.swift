// NetStack: the endpoint stack above FastDemux. One folder per concept:
//   Output/       IPv4/IPv6 headers, UDP, ICMP and ICMPv6 builders, fragmentation
//   Reassembly/   IPv4 and IPv6 fragment reassembly
//   Stack/        EndpointStack: the per-core engine on a multi-queue TUN device
//   Sockets/      UDPSocket: bind/connect/receive/send, dual stack, reuseport
//   Input/        ICMP decode
@_exported import FastDemux
