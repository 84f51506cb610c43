// Command bench measures gRPC through a Pylon gateway against the same
// gRPC service called directly, in one run: unary calls (calls/s, p50,
// p99) from concurrent clients, and server-streaming throughput. Both sides
// run on this machine over loopback, so the figures compare, they do not
// promise.
//
//	go run ./bench -duration 5s -concurrency 32
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"runtime/pprof"
	"slices"
	"sync"
	"time"

	"github.com/pylon-gateway/pylon"
	ggrpc "google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"
)

type service struct {
	testpb.UnimplementedTestServiceServer
}

func (service) UnaryCall(_ context.Context, in *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	return &testpb.SimpleResponse{Payload: &testpb.Payload{Body: make([]byte, in.ResponseSize)}}, nil
}

func (service) StreamingOutputCall(in *testpb.StreamingOutputCallRequest, s ggrpc.ServerStreamingServer[testpb.StreamingOutputCallResponse]) error {
	body := make([]byte, in.ResponseParameters[0].Size)
	for s.Context().Err() == nil {
		if err := s.Send(&testpb.StreamingOutputCallResponse{Payload: &testpb.Payload{Body: body}}); err != nil {
			return err
		}
	}
	return nil
}

func main() {
	duration := flag.Duration("duration", 5*time.Second, "how long each measurement lasts")
	conc := flag.Int("concurrency", 32, "concurrent unary callers")
	size := flag.Int("size", 128, "request and response payload bytes")
	msg := flag.Int("stream-message", 16<<10, "server-streaming message bytes")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the gateway measurement to this file")
	flag.Parse()

	up := listen()
	srv := ggrpc.NewServer()
	testpb.RegisterTestServiceServer(srv, service{})
	go func() { _ = srv.Serve(up) }()
	defer srv.Stop()

	b := pylon.MustNewBackend("bench", pylon.BackendOptions{Targets: []string{"h2c://" + up.Addr().String()}})
	defer b.Close()
	gw := pylon.New(pylon.Options{})
	gw.Route("/grpc.testing.TestService/").To(b)
	front := listen()
	hs := pylon.NewServer("", gw)
	go func() { _ = hs.Serve(front) }()
	defer hs.Close()

	targets := []struct{ name, addr string }{{"direct", up.Addr().String()}, {"pylon", front.Addr().String()}}
	fmt.Printf("unary: %d concurrent callers, %d-byte payloads, %v each\n", *conc, *size, *duration)
	fmt.Printf("%-8s %12s %10s %10s\n", "", "calls/s", "p50", "p99")
	for _, tg := range targets {
		c := client(tg.addr)
		unary(c, *conc, *size, *duration/5) // warm-up
		if *cpuprofile != "" && tg.name == "pylon" {
			f, err := os.Create(*cpuprofile)
			if err != nil {
				log.Fatal(err)
			}
			_ = pprof.StartCPUProfile(f)
		}
		n, lat := unary(c, *conc, *size, *duration)
		if *cpuprofile != "" && tg.name == "pylon" {
			pprof.StopCPUProfile()
		}
		fmt.Printf("%-8s %12.0f %10v %10v\n", tg.name, float64(n)/duration.Seconds(), pct(lat, 50), pct(lat, 99))
	}
	fmt.Printf("server streaming: %d-byte messages, one stream, %v each\n", *msg, *duration)
	for _, tg := range targets {
		c := client(tg.addr)
		bytes, msgs := stream(c, *msg, *duration)
		fmt.Printf("%-8s %9.0f MB/s %9.0f msgs/s\n", tg.name, float64(bytes)/duration.Seconds()/1e6, float64(msgs)/duration.Seconds())
	}
}

func listen() net.Listener {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	return ln
}

func client(addr string) testpb.TestServiceClient {
	cc, err := ggrpc.NewClient(addr, ggrpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		log.Fatal(err)
	}
	return testpb.NewTestServiceClient(cc)
}

// unary runs conc callers for d and returns the calls made and their
// latencies.
func unary(c testpb.TestServiceClient, conc, size int, d time.Duration) (int, []time.Duration) {
	// Callers stop on a signal, not on a context deadline: the gateway
	// honours grpc-timeout and would end the last calls a little early.
	stop := make(chan struct{})
	time.AfterFunc(d, func() { close(stop) })
	ctx := context.Background()
	req := &testpb.SimpleRequest{ResponseSize: int32(size), Payload: &testpb.Payload{Body: make([]byte, size)}}
	var mu sync.Mutex
	var all []time.Duration
	var wg sync.WaitGroup
	for range conc {
		wg.Go(func() {
			lat := make([]time.Duration, 0, 1<<14)
			for {
				select {
				case <-stop:
					mu.Lock()
					all = append(all, lat...)
					mu.Unlock()
					return
				default:
				}
				t := time.Now()
				if _, err := c.UnaryCall(ctx, req); err != nil {
					fmt.Fprintln(os.Stderr, "call:", err)
					continue
				}
				lat = append(lat, time.Since(t))
			}
		})
	}
	wg.Wait()
	return len(all), all
}

func pct(lat []time.Duration, p int) time.Duration {
	if len(lat) == 0 {
		return 0
	}
	slices.Sort(lat)
	return lat[(len(lat)-1)*p/100].Round(time.Microsecond)
}

// stream reads one server stream for d and returns the payload bytes and
// messages received.
func stream(c testpb.TestServiceClient, size int, d time.Duration) (bytes, msgs int) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	s, err := c.StreamingOutputCall(ctx, &testpb.StreamingOutputCallRequest{ResponseParameters: []*testpb.ResponseParameters{{Size: int32(size)}}})
	if err != nil {
		log.Fatal(err)
	}
	for {
		m, err := s.Recv()
		if err != nil {
			if !errors.Is(err, io.EOF) && ctx.Err() == nil {
				log.Print(err)
			}
			return bytes, msgs
		}
		bytes += len(m.Payload.Body)
		msgs++
	}
}
